"""The `late-fusion` family, trained on real sample products of six types.

Real EfficientNet-Lite0 weights, real Tesseract, real photos and titles. The tests assert
behaviour: each modality predicts alone, the folder is self-contained, and each switch changes
what it says it changes (and nothing runs that a switch turned off).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.conftest import SIX_CODES
from tests.model.multimodal_checks import (
    both_modality_rows,
    check_distributions_over_codes,
    check_each_modality_predicts,
    check_embeddings,
    check_unreadable_photo_refused_by_name,
)

from prodclass.data.layout import ChallengeLayout, read_features
from prodclass.models.class_weights import (
    CATALOGUE_FILE,
    ClassMixError,
    catalogue_shares,
    row_weights,
)
from prodclass.models.feature_cache import FeatureCache
from prodclass.models.late_fusion import TEXT_MEMBER_FILE, TORCH_FILE, LateFusionParams
from prodclass.models.registry import create, load_model_dir
from prodclass.settings import get_settings

CODES = SIX_CODES
FAST = {"threads": 1, "fusion_folds": 2}  # two inner folds, not the default three


@pytest.fixture(scope="module")
def trained(splits):
    model = create("late-fusion", FAST)
    facts = model.fit(splits["train"])
    return model, facts


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: Path):
    """A data folder the settings point at: the shipped class mix and 12 real unlabelled
    products (with their photos), which a test may replace."""
    src, out = ChallengeLayout(sample), ChallengeLayout(tmp_path / "data")
    out.image_dir("test").mkdir(parents=True)
    shutil.copy(src.root / CATALOGUE_FILE, out.root / CATALOGUE_FILE)
    unlabelled = read_features(src.x_test).head(12)
    unlabelled.index.name = None
    unlabelled.to_csv(out.x_test)
    for imageid, productid in zip(unlabelled["imageid"], unlabelled["productid"]):
        photo = src.image_path(imageid, productid, "test")
        if photo.is_file():
            shutil.copy(photo, out.image_dir("test") / photo.name)
    monkeypatch.setenv("PRODCLASS_DATA_DIR", str(out.root))
    get_settings.cache_clear()
    yield out.root
    get_settings.cache_clear()


# ---- what every multimodal family owes ---------------------------------------------------


def test_probabilities_are_distributions_over_the_learnt_codes(trained, splits):
    check_distributions_over_codes(trained[0], splits["test"], CODES)


def test_text_only_image_only_and_both_rows_all_predict(trained, splits):
    check_each_modality_predicts(trained[0], splits["test"], CODES)


def test_products_embed_per_modality_for_similarity(trained, splits):
    check_embeddings(trained[0], splits["val"])


def test_an_unreadable_photo_is_refused_by_name(trained, tmp_path):
    check_unreadable_photo_refused_by_name(trained[0], tmp_path)


def test_each_member_alone_classifies_its_products(trained, splits):
    """Direction: the photo member alone and the text member alone each find the product
    type of most held-out products (chance: ~0.17)."""
    model, facts = trained
    held_out = pd.concat([splits["val"], splits["test"]])
    photos = held_out[held_out["image_path"] != ""]
    texts = held_out[held_out["text"] != ""]
    truth = photos["label"].astype(int).to_numpy()
    assert float((model.predict(photos.assign(text="")) == truth).mean()) > 0.4
    truth = texts["label"].astype(int).to_numpy()
    assert float((model.predict(texts.assign(image_path="")) == truth).mean()) > 0.6
    assert 0.0 <= facts["fusion_weight_both"] <= 1.0 and facts["temperature_both"] > 0


# ---- the saved folder --------------------------------------------------------------------


def test_the_folder_alone_gives_identical_predictions(trained, splits, tmp_path):
    model, _ = trained
    folder = model.save(tmp_path / "model")
    assert (folder / TEXT_MEMBER_FILE).is_file() and (folder / TORCH_FILE).is_file()
    loaded = load_model_dir(folder)
    expected = model.predict_proba(splits["test"])
    np.testing.assert_allclose(loaded.predict_proba(splits["test"]), expected, atol=1e-6)
    assert list(loaded.classes_) == list(model.classes_)
    assert loaded.temperatures == pytest.approx(model.temperatures)


# ---- switches ----------------------------------------------------------------------------


def _photo_rows(frame: pd.DataFrame, with_text: bool, n: int = 2) -> pd.DataFrame:
    has_text = frame["text"] != ""
    rows = frame[(frame["image_path"] != "") & (has_text if with_text else ~has_text)]
    return rows.head(n)


@pytest.mark.parametrize(("ocr", "photos_read"), [("off", 0), ("photo_only", 2), ("all", 4)])
def test_the_ocr_switch_decides_which_photos_tesseract_reads(splits, tmp_path, ocr, photos_read):
    rows = pd.concat([_photo_rows(splits["train"], True), _photo_rows(splits["train"], False)])
    model = create("late-fusion", FAST | {"ocr": ocr})
    model.ocr_cache_dir = tmp_path / "ocr"
    words = model._words(rows)
    read = list((tmp_path / "ocr").rglob("*.txt"))
    assert len(read) == photos_read
    assert words[:2] == list(rows["text"][:2]) or ocr == "all"  # titles kept, words appended


def test_tta_averages_the_original_and_the_mirrored_photo(splits, tmp_path):
    rows = both_modality_rows(splits["test"], n=3)
    tta = create("late-fusion", FAST | {"tta": True})
    plain = create("late-fusion", FAST)
    tta.cache = plain.cache = FeatureCache(tmp_path / "features")
    _, averaged = tta._photo_features(rows)
    _, original = plain._photo_features(rows)
    views = tta.encoder.features(list(rows["image_path"]), ("orig", "hflip"), tta.cache)
    np.testing.assert_allclose(averaged, views.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(original, views[:, 0], rtol=1e-6)
    assert np.abs(averaged - original).max() > 1e-3


def test_word_ngrams_only_and_word_vectors_change_the_text_features(splits):
    train = splits["train"]
    words_only = create("late-fusion", FAST | {"text_ngrams": "word", "word_vectors": True})
    words_only.fit(train)
    parts = dict(words_only.text_features.named_transformers_)
    assert set(parts) - {"remainder"} == {"word", "vectors"}
    vectors = parts["vectors"].transform(["piscine gonflable", ""]).toarray()
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5) and not vectors[1].any()
    check_distributions_over_codes(words_only, splits["test"], CODES)


def test_title_ngrams_weigh_the_title_apart(trained, splits):
    titled = create("late-fusion", FAST | {"title_weight": 1.0})
    titled.fit(splits["train"])
    parts = set(titled.text_features.named_transformers_)
    assert {"word", "char", "title_word", "title_char"} <= parts
    assert titled.text_features.transformer_weights == {"title_word": 1.0, "title_char": 1.0}
    rows = splits["test"][splits["test"]["text"] != ""]
    assert (rows["title"] != "").all()  # prepared folders carry the cleaned title
    assert not np.allclose(titled.predict_proba(rows), trained[0].predict_proba(rows))
    # a frame without titles still classifies: the title block then reads nothing
    check_distributions_over_codes(titled, rows.drop(columns="title"), CODES)


def test_stacked_fusion_fits_a_stacker_on_out_of_fold_answers(trained, splits):
    stacked = create("late-fusion", FAST | {"fusion": "stacked"})
    facts = stacked.fit(splits["train"])
    assert facts["n_fusion_rows_both"] >= 20
    assert stacked.fusions["both"].stacker is not None
    assert trained[0].fusions["both"].stacker is None  # weighted: one weight, no stacker
    rows = both_modality_rows(splits["test"])
    assert not np.allclose(stacked.predict_proba(rows), trained[0].predict_proba(rows))


def test_pseudo_labels_add_confident_unlabelled_products_and_refit(splits, data_dir):
    model = create("late-fusion", FAST | {"pseudo_labels": True, "pseudo_threshold": 0.3})
    facts = model.fit(splits["train"])
    assert 0 < facts["n_pseudo_labels"] <= 12
    assert facts["n_train_rows"] == len(splits["train"]) + facts["n_pseudo_labels"]


# ---- class weights -----------------------------------------------------------------------


def test_catalogue_weights_follow_the_shipped_class_mix(sample):
    shares = catalogue_shares(sample / CATALOGUE_FILE)
    assert len(shares) == 27 and sum(shares.values()) == pytest.approx(1.0)
    assert shares[2583] > 0.1 > shares[60]  # the catalogue is imbalanced
    labels = np.asarray([2583, 60, 60, 60])  # the sample over-represents 60
    weights = row_weights(labels, "catalogue", shares)
    assert weights[0] / weights[1] == pytest.approx(shares[2583] / shares[60] * 3)
    balanced = row_weights(labels, "balanced")
    assert balanced[0] / balanced[1] == pytest.approx(3.0)
    assert (row_weights(labels, "none") == 1).all()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("prdtypecode,share\n10,0.5\n", "lacks the column"),
        ("prdtypecode,count\n10,many\n", "rows 2 need"),
        ("prdtypecode,count\n10,5\n10,6\n", "listed twice"),
    ],
)
def test_a_malformed_class_mix_is_refused_with_a_clear_error(splits, data_dir, content, message):
    (data_dir / CATALOGUE_FILE).write_text(content)
    model = create("late-fusion", FAST | {"class_weight": "catalogue"})
    with pytest.raises(ClassMixError, match=message):
        model.fit(splits["train"])


def test_a_class_missing_from_the_mix_is_refused(data_dir):
    shares = catalogue_shares(data_dir / CATALOGUE_FILE)
    with pytest.raises(ClassMixError, match="no share for"):
        row_weights(np.asarray([10, 99]), "catalogue", shares)


def test_unknown_or_invalid_params_are_refused():
    with pytest.raises(ValueError):
        LateFusionParams(image_layers=2)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        create("late-fusion", {"ocr": "sometimes"})
    with pytest.raises(ValueError):
        create("late-fusion", {"variant": "resnet50"})


def test_the_photo_member_alone_is_a_baseline_that_ignores_words(splits, tmp_path):
    model = create("late-fusion", FAST | {"use_text": False})
    model.fit(splits["train"])
    assert model.text_svm is None and set(model.fusions) <= {"both", "ocr"}
    rows = both_modality_rows(splits["test"], n=4)
    np.testing.assert_allclose(
        model.predict_proba(rows), model.predict_proba(rows.assign(text="")), atol=1e-6
    )
    text_only = rows.assign(image_path="")
    prior = np.exp(model.log_prior)
    np.testing.assert_allclose(model.predict_proba(text_only), np.tile(prior, (4, 1)), atol=1e-6)
    loaded = load_model_dir(model.save(tmp_path / "photo"))
    assert not (tmp_path / "photo" / TEXT_MEMBER_FILE).exists()
    np.testing.assert_allclose(loaded.predict_proba(rows), model.predict_proba(rows), atol=1e-6)
    assert set(model.embed(rows)) == {"image"}


def test_the_params_yaml_section_is_valid(sample):
    from tests.conftest import PROJECT_ROOT

    from prodclass.params import load_params

    section = load_params(PROJECT_ROOT / "params.yaml").family_params("late-fusion")
    assert section["ocr"] in ("off", "photo_only", "all")  # a string (a bare off reads false)
    assert create("late-fusion", section).params == LateFusionParams(**section)
