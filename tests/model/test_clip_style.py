"""The `clip-style` family on real sample products: stage 1 (InfoNCE alignment on the fit's
pairs and unlabelled ones), each stage 2, each tower alone, save/load from the folder alone,
and the same code on a (tiny, random) CLIP from a local folder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from tests.conftest import SIX_CODES, copy_unlabelled
from tests.model.multimodal_checks import (
    check_distributions_over_codes,
    check_each_modality_predicts,
    check_embeddings,
    check_unreadable_photo_refused_by_name,
)
from tests.model.test_multimodal_clip import build_tiny_clip

from prodclass.data.unlabelled import UnlabelledDataError, unlabelled_pairs
from prodclass.models.contrastive import INIT_LOGIT_SCALE, info_nce, recall_at
from prodclass.models.registry import create, load_model_dir

CODES = SIX_CODES
FAST = {
    "text_buckets": 2**14,
    "hidden": 128,
    "embed_dim": 64,
    "align_epochs": 25,
    "align_patience": 25,  # keep every epoch: the loss curve is what is checked
    "align_batch_size": 64,
    "align_lr": 1e-3,
    "epochs": 5,
    "patience": 5,
    "batch_size": 32,
    "threads": 1,
}
UNLABELLED_ROWS = 60


@pytest.fixture(scope="module")
def unlabelled_dir(sample: Path, tmp_path_factory) -> Path:
    return copy_unlabelled(sample, tmp_path_factory.mktemp("unlabelled"), UNLABELLED_ROWS)


def _fit(params: dict, splits: dict, unlabelled_dir: Path):
    model = create("clip-style", FAST | params | {"unlabelled_dir": str(unlabelled_dir)})
    return model, model.fit(splits["train"], splits["val"])


@pytest.fixture(scope="module")
def probe(splits, unlabelled_dir):
    return _fit({"stage2": "linear_probe"}, splits, unlabelled_dir)


@pytest.fixture(scope="module")
def finetuned(splits, unlabelled_dir):
    return _fit({"stage2": "finetune"}, splits, unlabelled_dir)


def _pairs(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["text"] != "") & (frame["image_path"] != "")]


# ---- the contrastive pieces ---------------------------------------------------------------


def test_info_nce_is_low_for_matching_pairs_and_recall_finds_them():
    torch.manual_seed(0)
    image = torch.randn(16, 8)
    text = image + 0.05 * torch.randn(16, 8)
    scale = torch.tensor(20.0)
    assert info_nce(image, text, scale) < 0.1 < info_nce(image, text[torch.randperm(16)], scale)
    recall = recall_at(image.numpy(), text.numpy(), (1, 10))
    assert recall == {"recall@1": 1.0, "recall@10": 1.0}
    shuffled = recall_at(image.numpy(), text.numpy()[::-1].copy(), (1,))
    assert shuffled["recall@1"] < 0.2


# ---- stage 1 ------------------------------------------------------------------------------


def test_alignment_lowers_infonce_and_learns_its_temperature(probe):
    _, facts = probe
    history = facts["align_history"]
    assert len(history) == FAST["align_epochs"]
    assert history[-1]["align_train_loss"] < 0.5 * history[0]["align_train_loss"]
    assert not math.isclose(facts["logit_scale"], math.exp(INIT_LOGIT_SCALE), rel_tol=1e-3)


def test_alignment_uses_the_fits_pairs_and_the_unlabelled_ones_never_the_validation_rows(
    probe, splits, unlabelled_dir
):
    _, facts = probe
    unlabelled = len(unlabelled_pairs(unlabelled_dir))
    assert unlabelled > 0 and facts["n_unlabelled_pairs"] == unlabelled
    assert facts["align_pairs"] == len(_pairs(splits["train"])) + unlabelled
    assert facts["align_val_pairs"] == len(_pairs(splits["val"]))


def test_aligned_photos_find_their_own_titles_better_than_chance(probe, splits):
    model, _ = probe
    pairs = _pairs(splits["train"])
    vectors = model.embed(pairs)
    recall = recall_at(vectors["image"], vectors["text"], (1, 10))
    chance = 10 / len(pairs)
    assert recall["recall@10"] > 3 * chance, (recall, len(pairs))


def test_a_missing_unlabelled_folder_is_one_clear_sentence(tmp_path, splits):
    model = create("clip-style", FAST | {"unlabelled_dir": str(tmp_path)})
    with pytest.raises(UnlabelledDataError, match="X_test_update.csv"):
        model.fit(splits["train"], splits["val"])


# ---- stage 2 ------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["probe", "finetuned"])
def test_each_stage_two_classifies_every_modality_alone(fixture, request, splits):
    model, _ = request.getfixturevalue(fixture)
    check_distributions_over_codes(model, splits["test"], CODES)
    check_each_modality_predicts(model, splits["test"], CODES)
    test = splits["test"]
    accuracy = float((model.predict(test) == test["label"].to_numpy()).mean())
    assert accuracy > 0.5, accuracy  # six classes: chance is about 0.17


def test_finetuning_trains_in_epochs_and_keeps_the_space_shared(finetuned, splits):
    model, facts = finetuned
    assert facts["epochs_run"] == FAST["epochs"] and facts["temperature"] > 0
    pairs = _pairs(splits["train"])
    vectors = model.embed(pairs)
    assert recall_at(vectors["image"], vectors["text"], (10,))["recall@10"] > 30 / len(pairs)


def test_zero_shot_by_category_names_beats_chance(probe, splits):
    model, _ = probe
    assert model.class_prompts()[CODES.index("2583")] == "une photo de piscine et accessoires"
    rows = pd.concat([splits["train"], splits["val"], splits["test"]])
    predicted = model.classes_[model.zero_shot_proba(rows).argmax(axis=1)]
    accuracy = float((predicted == rows["label"].to_numpy()).mean())
    chance = 1 / len(CODES)
    # three binomial standard deviations above guessing (measured: 0.28 on these 240 rows)
    assert accuracy > chance + 3 * math.sqrt(chance * (1 - chance) / len(rows)), accuracy


def test_zero_shot_is_a_stage_two_for_the_cross_validation_table(splits, unlabelled_dir):
    model, facts = _fit({"stage2": "zero_shot", "align_epochs": 3}, splits, unlabelled_dir)
    assert "probe_rows" not in facts and "epochs_run" not in facts
    check_distributions_over_codes(model, splits["test"], CODES)
    np.testing.assert_allclose(
        model.predict_proba(splits["test"]), model.zero_shot_proba(splits["test"])
    )


# ---- embeddings, files, inputs -------------------------------------------------------------


def test_products_embed_per_modality_in_one_space(probe, splits):
    model, _ = probe
    check_embeddings(model, splits["test"])
    assert model.shared_space
    phrase = model.embed_texts(["piscine gonflable"])
    assert phrase.shape == (1, 64) and np.isclose(np.linalg.norm(phrase), 1.0, atol=1e-5)


@pytest.mark.parametrize("fixture", ["probe", "finetuned"])
def test_save_and_load_from_the_folder_alone_give_identical_answers(
    fixture, request, splits, tmp_path
):
    model, _ = request.getfixturevalue(fixture)
    folder = model.save(tmp_path / "model")
    loaded = load_model_dir(folder)
    test = splits["test"]
    np.testing.assert_allclose(loaded.predict_proba(test), model.predict_proba(test), atol=1e-5)
    for modality, vectors in model.embed(test).items():
        np.testing.assert_allclose(loaded.embed(test)[modality], vectors, atol=1e-5)


def test_an_unreadable_photo_is_refused_by_name(probe, tmp_path):
    check_unreadable_photo_refused_by_name(probe[0], tmp_path)


def test_invalid_params_are_refused():
    with pytest.raises(ValidationError, match="towers=clip"):
        create("clip-style", {"clip_weights_dir": "/somewhere"})
    with pytest.raises(ValidationError, match="stage2"):
        create("clip-style", {"stage2": "nearest"})
    with pytest.raises(ValidationError, match="name"):
        create("clip-style", {"prompt": "une photo"})


# ---- real CLIP towers from a local folder ---------------------------------------------------


def test_the_same_code_aligns_and_probes_a_clip_from_a_local_folder(
    splits, unlabelled_dir, tmp_path
):
    texts = [t for t in splits["train"]["text"] if t]
    clip_dir = build_tiny_clip(texts, tmp_path / "tiny-clip")
    params = {
        "towers": "clip",
        "clip_weights_dir": str(clip_dir),
        "vision_trainable_layers": 1,
        "text_trainable_layers": 1,
        "tower_lr": 1e-3,
        "align_epochs": 4,
    }
    model, facts = _fit(params, splits, unlabelled_dir)
    history = facts["align_history"]
    assert history[-1]["align_train_loss"] < history[0]["align_train_loss"]
    from prodclass.models.multimodal_clip import load_backbone

    original = load_backbone(str(clip_dir))[0].state_dict()
    tuned = model.towers.clip.state_dict()
    first_layer = "vision_model.encoder.layers.0.mlp.fc1.weight"
    last_layer = "vision_model.encoder.layers.1.mlp.fc1.weight"
    assert torch.equal(original[first_layer], tuned[first_layer])
    assert not torch.equal(original[last_layer], tuned[last_layer])
    check_each_modality_predicts(model, splits["test"], CODES)
    folder = model.save(tmp_path / "model")
    clip_dir.rename(tmp_path / "moved")  # the folder alone must be enough
    loaded = load_model_dir(folder)
    test = splits["test"]
    np.testing.assert_allclose(loaded.predict_proba(test), model.predict_proba(test), atol=1e-5)
