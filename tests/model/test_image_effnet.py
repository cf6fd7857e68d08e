"""The EfficientNet-Lite photo encoder on real weights and real sample photos.

The split into trunk and tail must be exact, the pretrained features must mean something on
catalogue photos, and the feature cache must return what the trunk computes, fast.
"""

from __future__ import annotations

import logging
import re
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from prodclass.data.images import open_image
from prodclass.data.layout import ChallengeLayout, read_features, read_labels
from prodclass.models.feature_cache import (
    ActivationStore,
    CacheKey,
    FeatureCache,
    cache_activations,
    trunk_activations,
)
from prodclass.models.image_effnet import (
    EffNetConfig,
    EffNetTail,
    EffNetTrunk,
    encoder_version,
    hflip,
    image_to_tensor,
    load_pretrained_effnet,
)

CONFIG = EffNetConfig()
BOOK_CODES = ("10", "2705")  # used books, new books
TOY_CODES = ("1280",)  # children's toys: the control group
# ImageNet classes a photo of a printed thing lands in (book jacket, comic book, web site)
PRINTED = {921, 917, 916}
BOOKISH = PRINTED | {549, 446}  # + envelope, binder


def photos_of(sample: Path, codes: tuple[str, ...], n_per_code: int) -> list[Path]:
    """The first ``n_per_code`` existing photos of each product type, in CSV order."""
    layout = ChallengeLayout(sample)
    rows = read_features(layout.x_train).join(read_labels(layout.y_train))
    out = []
    for code in codes:
        of_code = rows[rows["prdtypecode"] == code]
        paths = [layout.image_path(i, p) for i, p in zip(of_code["imageid"], of_code["productid"])]
        found = [p for p in paths if p.is_file()][:n_per_code]
        assert len(found) == n_per_code, f"sample has too few photos of {code}"
        out += found
    return out


@pytest.fixture(scope="module")
def books(sample: Path) -> list[Path]:
    return photos_of(sample, BOOK_CODES, 5)


@pytest.fixture(scope="module")
def toys(sample: Path) -> list[Path]:
    return photos_of(sample, TOY_CODES, 6)


@pytest.fixture(scope="module")
def net():
    return load_pretrained_effnet(CONFIG.variant)


def batch(paths: list[Path]) -> torch.Tensor:
    return torch.stack([image_to_tensor(open_image(p), CONFIG.image_size) for p in paths])


# ---- (a) the split is exact ------------------------------------------------------------


@pytest.mark.parametrize("trainable_blocks", [0, 2, 5])
def test_trunk_then_tail_equals_the_whole_pretrained_network(books, trainable_blocks):
    config = EffNetConfig(trainable_blocks=trainable_blocks)
    # two independent loads: building the split must not change what the network computes
    split_net = load_pretrained_effnet(config.variant)
    reference = load_pretrained_effnet(config.variant)
    trunk, tail = EffNetTrunk(split_net, config), EffNetTail(split_net, config).eval()
    x = batch(books[:2])  # (2, 3, 224, 224)
    with torch.no_grad():
        expected = reference._avg_pooling(reference.extract_features(x)).flatten(1)
        acts = trunk(x)
        pooled = tail(acts)
    assert acts.shape[1:] == trunk.out_shape
    assert acts.shape[2:] == ((7, 7) if trainable_blocks <= 4 else (14, 14))  # block 11: stride 2
    assert pooled.shape == (2, 1280) == (2, tail.out_dim)
    # same computation; only float rounding differs (the split runs in channels-last layout)
    torch.testing.assert_close(pooled, expected, rtol=1e-4, atol=1e-4)


def test_tail_passes_the_same_drop_connect_rates_as_the_original(net):
    """Stochastic depth scales with the block's index in the whole network, not in the tail."""
    config = EffNetConfig(trainable_blocks=3)
    reference = load_pretrained_effnet(config.variant).train()
    tail = EffNetTail(load_pretrained_effnet(config.variant), config).train()
    seen: dict[str, list[float]] = {"reference": [], "tail": []}

    def recorder(name):
        def hook(module, args, kwargs):
            seen[name].append(kwargs["drop_connect_rate"])

        return hook

    for block in reference._blocks[-3:]:
        block.register_forward_pre_hook(recorder("reference"), with_kwargs=True)
    for block in tail.blocks:
        block.register_forward_pre_hook(recorder("tail"), with_kwargs=True)
    with torch.no_grad():
        reference.extract_features(torch.zeros(2, 3, 224, 224))
        tail(torch.zeros(2, 192, 7, 7))  # (B, C, 7, 7) entering block 13 of lite0
    assert seen["tail"] == seen["reference"]
    assert seen["tail"][0] == pytest.approx(0.2 * 13 / 16)


# ---- (b) the pretrained features mean something on catalogue photos ---------------------


def test_imagenet_head_sees_printed_matter_in_book_photos_not_in_toy_photos(net, books, toys):
    trunk, tail = EffNetTrunk(net, CONFIG), EffNetTail(net, CONFIG).eval()
    with torch.no_grad():
        logits = net._fc(tail(trunk(batch(books + toys))))  # (16, 1000) ImageNet logits
    top5 = logits.topk(5).indices.tolist()
    book_top5, toy_top5 = top5[: len(books)], top5[len(books) :]

    def share_printed(rows: list[list[int]]) -> float:
        return float(np.mean([bool(PRINTED & set(r)) for r in rows]))

    # book photos: a book jacket / comic book / web site in the top 5 for most of them, and
    # a book-ish top-1 for several; toy photos (same merchants, same lighting) rarely
    assert sum(r[0] in BOOKISH for r in book_top5) >= 3, book_top5
    assert share_printed(book_top5) >= 0.7, book_top5
    assert share_printed(book_top5) - share_printed(toy_top5) >= 0.4, (book_top5, toy_top5)


# ---- (c) the feature cache --------------------------------------------------------------


@pytest.fixture(scope="module")
def trunk(net) -> EffNetTrunk:
    return EffNetTrunk(net, CONFIG)


def test_cache_returns_what_the_trunk_computes_and_a_warm_pass_runs_no_trunk(
    trunk, books, toys, tmp_path
):
    paths = [str(p) for p in books + toys]  # 16 photos, 2 views: 32 trunk passes
    views = ("orig", "hflip")
    cache = FeatureCache(tmp_path / "cache")

    cold = trunk_activations(paths, trunk, cache, CONFIG, views=views, progress=False)
    assert (cache.hits, cache.misses) == (0, 32)
    assert cold.shape == (16, 2, *trunk.out_shape) and cold.dtype == np.float16

    cache.reset_counters()
    warm = trunk_activations(paths, trunk, cache, CONFIG, views=views, progress=False)
    assert (cache.hits, cache.misses) == (32, 0)
    np.testing.assert_array_equal(warm, cold)
    # (how much faster a warm pass is: bench/feature_cache_speed.py)

    # what was cached is the trunk's output for each view, up to float16 rounding (another
    # batch size may pick another convolution kernel, so the last bit can differ)
    x = batch([Path(p) for p in paths[:2]])
    with torch.inference_mode():
        by_view = {"orig": trunk(x).numpy(), "hflip": trunk(hflip(x)).numpy()}
    uncached = trunk_activations(paths[:2], trunk, None, CONFIG, views=views, progress=False)
    for v, view in enumerate(views):
        np.testing.assert_allclose(cold[:2, v], by_view[view], rtol=1e-2, atol=2e-3)
        np.testing.assert_allclose(uncached[:, v], by_view[view], rtol=1e-2, atol=2e-3)
    assert np.abs(by_view["orig"] - by_view["hflip"]).mean() > 0.1  # the views do differ

    # atomic writes leave no temporary files; one entry per photo and view
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert sorted({p.suffix for p in files}) == [".npy", ".txt"]
    assert sum(p.suffix == ".npy" for p in files) == 32


def test_a_store_streams_the_cached_activations_in_bounded_memory(trunk, books, toys, tmp_path):
    """Training reads trunk activations from the on-disk cache batch by batch: the store
    gives what the trunk computed, and reading every photo costs the memory of one chunk,
    not of all photos."""
    paths = [str(p) for p in books + toys]  # 16 photos
    views = ("orig", "hflip")
    cache = FeatureCache(tmp_path / "cache")
    in_memory = trunk_activations(paths, trunk, cache, CONFIG, views=views, progress=False)
    store = cache_activations(paths, trunk, cache, CONFIG, views=views, progress=False)
    assert len(store) == 16 and store.shape == trunk.out_shape
    rows, picked = np.asarray([3, 0, 15, 7]), np.asarray([1, 0, 1, 0])
    np.testing.assert_array_equal(store.take(rows, picked), in_memory[rows, picked])
    np.testing.assert_array_equal(np.concatenate(list(store.chunks(5))), in_memory)

    def streaming_peak(paths: list[str]) -> int:
        part = cache_activations(paths, trunk, cache, CONFIG, views=views, progress=False)
        tracemalloc.start()
        try:
            for chunk in part.chunks(2):
                assert chunk.shape[0] <= 2
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # four times the photos, the same memory (a chunk and np.load's buffers); in memory, the
    # 16 photos take 602 KB
    few, many = streaming_peak(paths[:4]), streaming_peak(paths)
    assert many < 1.2 * few, f"streaming 4 photos peaked at {few} bytes, 16 at {many}"
    assert many < in_memory.nbytes / 2

    # an entry evicted while in use (the cache's cap is below the set) is computed again from
    # its photo, to float16 rounding, and cached again
    gone = [cache.path(CacheKey(store.shas[r], views[v], store.encoder_version)) for r, v in
            ((0, 0), (3, 1))]  # fmt: skip
    for path in gone:
        path.unlink()
    again = store.take(np.asarray([0, 3]), np.asarray([0, 1])).astype(np.float32)
    np.testing.assert_allclose(again[0], in_memory[0, 0], rtol=1e-2, atol=2e-3)
    np.testing.assert_allclose(again[1], in_memory[3, 1], rtol=1e-2, atol=2e-3)
    assert all(path.is_file() for path in gone)
    # a store that was not given the photos names the entry, never zeroes it
    bare = ActivationStore(cache, store.shas, store.views, store.encoder_version, store.shape)
    gone[0].unlink()
    with pytest.raises(RuntimeError, match="vanished or changed"):
        bare.take(np.asarray([0]), np.asarray([0]))


def test_a_store_larger_than_the_cache_cap_still_reads_every_activation(
    trunk, books, toys, tmp_path, caplog
):
    """Under a cap that holds a fifth of the set, entries are evicted while the store is
    read: it computes them again (and says why it is slow), it never fails."""
    paths = [str(p) for p in books + toys]  # 16 photos x 2 views, 20 KB each on disk
    views = ("orig", "hflip")
    expected = trunk_activations(paths, trunk, None, CONFIG, views=views, progress=False)
    capped = FeatureCache(tmp_path / "capped", max_bytes=140_000)
    with caplog.at_level(logging.WARNING, logger="prodclass.models.feature_cache"):
        store = cache_activations(paths, trunk, capped, CONFIG, views=views, progress=False)
    assert any("over the feature cache's cap" in r.getMessage() for r in caplog.records)
    got = np.concatenate(list(store.chunks(4))).astype(np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=2e-3)
    entries = list((tmp_path / "capped").rglob("*.npy"))
    assert len(entries) <= 7 and sum(p.stat().st_size for p in entries) <= 140_000


def test_cache_key_follows_everything_that_changes_activations(tmp_path):
    base = encoder_version(CONFIG)
    assert encoder_version(EffNetConfig()) == base
    assert encoder_version(EffNetConfig(trainable_blocks=3)) != base
    assert encoder_version(EffNetConfig(image_size=256)) != base
    cache = FeatureCache(tmp_path)
    sha = "ab" * 32
    other = encoder_version(EffNetConfig(trainable_blocks=3))
    path = cache.path(CacheKey(sha, "orig", base))
    assert path != cache.path(CacheKey(sha, "orig", other))
    assert path != cache.path(CacheKey(sha, "hflip", base))
    assert path.relative_to(tmp_path).parts[1:] == ("ab", f"{sha}-orig.npy")
    assert cache.get(CacheKey(sha, "orig", base)) is None
    cache.put(CacheKey(sha, "orig", base), np.ones((2, 7, 7), np.float32))
    stored = cache.get(CacheKey(sha, "orig", base))
    assert stored is not None and stored.dtype == np.float16
    assert cache.get(CacheKey(sha, "orig", other)) is None


def test_unusable_photo_paths_are_refused_by_name(trunk, books, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    data = books[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a photo")
    missing = tmp_path / "missing.jpg"
    cache = FeatureCache(tmp_path / "cache")
    for bad in (truncated, not_an_image, missing):
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            trunk_activations([str(books[1]), str(bad)], trunk, cache, CONFIG, progress=False)
    with pytest.raises(ValueError, match="empty image path"):
        trunk_activations([""], trunk, cache, CONFIG, progress=False)


def test_a_corrupted_cache_entry_is_recomputed(trunk, books, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    photo = tmp_path / books[0].name
    shutil.copy(books[0], photo)
    first = trunk_activations([str(photo)], trunk, cache, CONFIG, progress=False)
    (entry,) = (tmp_path / "cache").rglob("*.npy")
    entry.write_bytes(entry.read_bytes()[:50])
    again = trunk_activations([str(photo)], trunk, cache, CONFIG, progress=False)
    np.testing.assert_array_equal(again, first)
    assert cache.get(CacheKey(entry.name[:64], "orig", encoder_version(CONFIG))) is not None


# ---- (d) what trains --------------------------------------------------------------------


def test_only_the_tail_is_trainable_and_the_trunk_stays_frozen(books):
    net = load_pretrained_effnet(CONFIG.variant)
    trunk, tail = EffNetTrunk(net, CONFIG), EffNetTail(net, CONFIG)
    assert not any(p.requires_grad for p in trunk.parameters())
    assert all(p.requires_grad for p in tail.parameters())
    n_tail = sum(p.numel() for p in tail.parameters())
    expected = sum(
        p.numel() for m in (*net._blocks[-2:], net._conv_head, net._bn1) for p in m.parameters()
    )
    assert n_tail == expected

    parent = torch.nn.ModuleDict({"trunk": trunk, "tail": tail}).train()
    assert not any(m.training for m in trunk.modules())  # a parent's train() leaves it eval
    assert all(m.training for m in tail.modules())
    tail(trunk(batch(books[:2]))).square().mean().backward()
    assert all(p.grad is None for p in trunk.parameters())
    assert all(p.grad is not None for p in tail.parameters())
    parent.eval()
