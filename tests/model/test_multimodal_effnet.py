"""The `multimodal-effnet` and `image-effnet` families, trained on real sample products.

Real EfficientNet-Lite0 weights (pip package), real photos and titles of six product types;
Tesseract's words on the photos are checked on their own (the shared reader is tested in
test_ocr.py and test_late_fusion.py). The tests assert behaviour: every modality predicts on
its own, hiding an input changes the answer, the folder is self-contained, the photo branch
alone classifies photos, the run lands in MLflow. Accuracy on the whole sample is measured by
the benchmarks and the cross-validation, not here.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
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

from prodclass.models.effnet_net import NET_FILE
from prodclass.models.multimodal_effnet import MultimodalEffnetClassifier, MultimodalEffnetParams
from prodclass.models.product_words import ocr_words
from prodclass.models.registry import create, load_model_dir
from prodclass.models.stacked_members import TFIDF_DIR
from prodclass.registry.model_registry import load_classifier, promote, register
from prodclass.serving.predictor import InvalidProductError, Predictor, ProductInput
from prodclass.settings import get_settings
from prodclass.training.cv import CVResult
from prodclass.training.train import CV_DIR, train_model

CODES = SIX_CODES
FAST = {
    "variant": "efficientnet-lite0",  # 224 px, 2.5x cheaper than the family's Lite2
    "trainable_blocks": 1,
    "views": ["orig"],
    "epochs": 6,
    "patience": 6,
    "batch_size": 32,
    "stack_folds": 3,
    "threads": 1,
    "ocr": False,  # Tesseract on every photo would be most of the time: tested on its own below
}


@pytest.fixture(scope="module")
def trained(splits) -> tuple[MultimodalEffnetClassifier, dict]:
    model = create("multimodal-effnet", FAST)
    facts = model.fit(splits["train"], splits["val"])
    return model, facts  # type: ignore[return-value]


# ---- training ---------------------------------------------------------------------------


def test_training_returns_history_and_beats_chance_on_validation(trained, splits):
    _, facts = trained
    history = facts["history"]
    assert [h["epoch"] for h in history] == list(range(1, facts["epochs_run"] + 1))
    assert facts["best_val_weighted_f1"] == max(h["epoch_val_weighted_f1"] for h in history)
    assert facts["temperature"] > 0
    # six classes: chance is ~0.17; a pretrained photo branch plus titles do far better
    assert facts["best_val_weighted_f1"] > 0.6, facts["best_val_weighted_f1"]


def test_only_the_image_tail_and_the_head_train(trained):
    model, _ = trained
    net = model.net
    assert net is not None and net.image_tail is not None
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert any(n.startswith("image_tail.blocks.0") for n in trainable)
    assert any(n.startswith("text_encoder.") for n in trainable)
    # the tail holds exactly the last `trainable_blocks` MBConv blocks
    assert len(net.image_tail.blocks) == FAST["trainable_blocks"]


# ---- inference --------------------------------------------------------------------------


def test_probabilities_are_distributions_over_the_learnt_codes(trained, splits):
    check_distributions_over_codes(trained[0], splits["test"], CODES)


def test_text_only_image_only_and_both_rows_all_predict(trained, splits):
    check_each_modality_predicts(trained[0], splits["test"], CODES)


def test_photos_alone_are_mostly_classified_right(trained, splits):
    """Direction: with the text removed, the photo branch (plus the words read on the photo)
    still finds the product type of most test products that have a photo."""
    model, _ = trained
    held_out = pd.concat([splits["val"], splits["test"]])  # ~35 photos: test alone has ~17
    rows = held_out[held_out["image_path"] != ""]
    predicted = model.predict(rows.assign(text=""))
    accuracy = float((predicted == rows["label"].astype(int).to_numpy()).mean())
    assert accuracy > 0.4, accuracy  # chance: ~0.17


def test_products_embed_per_modality_for_similarity(trained, splits):
    check_embeddings(trained[0], splits["val"])


def test_an_unreadable_photo_is_refused_by_name(trained, tmp_path):
    check_unreadable_photo_refused_by_name(trained[0], tmp_path)


# ---- the saved folder -------------------------------------------------------------------


def test_save_and_load_give_identical_predictions(trained, splits, tmp_path):
    model, _ = trained
    folder = model.save(tmp_path / "model")
    assert (folder / NET_FILE).is_file() and (folder / TFIDF_DIR).is_dir()
    expected = model.predict_proba(splits["test"])
    loaded = load_model_dir(folder)
    np.testing.assert_allclose(loaded.predict_proba(splits["test"]), expected, rtol=1e-5, atol=1e-6)
    assert list(loaded.classes_) == list(model.classes_)
    assert loaded.temperature == pytest.approx(model.temperature)


# ---- the photo-only family --------------------------------------------------------------


def test_image_effnet_learns_from_photos_only_and_still_answers_without_one(splits):
    model = create("image-effnet", FAST)
    facts = model.fit(splits["train"], splits["val"])
    with_photo = splits["train"]["image_path"] != ""
    assert facts["n_train_rows"] == int(with_photo.sum()) < len(splits["train"])
    assert model.net is not None and model.net.text_encoder is None
    test = splits["test"]
    photos = test[test["image_path"] != ""]
    accuracy = float((model.predict(photos) == photos["label"].astype(int).to_numpy()).mean())
    assert accuracy > 0.4, accuracy  # chance: ~0.17
    proba = model.predict_proba(test[test["image_path"] == ""].head(3))
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_with_ocr_on_the_words_read_on_each_photo_join_the_products_words(splits):
    photos = splits["train"][splits["train"]["image_path"] != ""].head(3)
    reading = create("multimodal-effnet", FAST | {"ocr": True})
    assert reading._ocr_words(photos) == ocr_words(list(photos["image_path"]))
    assert create("multimodal-effnet", FAST)._ocr_words(photos) == ["", "", ""]


# ---- params -----------------------------------------------------------------------------


def test_unknown_or_invalid_params_are_refused():
    with pytest.raises(ValueError):
        MultimodalEffnetParams(image_layers=2)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        create("multimodal-effnet", {"variant": "resnet50"})
    with pytest.raises(ValueError, match="validation split"):
        create("multimodal-effnet", FAST).fit(pd.DataFrame(), None)


# ---- the training pipeline --------------------------------------------------------------


def test_train_model_logs_a_run_and_a_model_that_registers_and_loads(
    isolated_settings, prepared, splits, tmp_path
):
    settings = get_settings()
    params = FAST | {"epochs": 2}
    result = train_model(
        prepared, "multimodal-effnet", params, settings, tmp_path / "candidate", folds=2
    )

    client = mlflow.MlflowClient(settings.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["model_family"] == "multimodal-effnet"
    for metric in ("cv_all_weighted_f1_low", "best_val_weighted_f1", "temperature", "cv_ece"):
        assert metric in run.data.metrics, metric
    curve = client.get_metric_history(result.run_id, "epoch_val_weighted_f1")
    cv = CVResult.load(Path(result.model_dir) / CV_DIR)  # two folds, each early-stopped
    assert len(cv.best_epochs) == 2 and all(1 <= e <= 2 for e in cv.best_epochs)
    # the refit on every product runs the folds' mean best epoch, one point per epoch
    assert [m.step for m in curve] == list(range(1, cv.refit_epochs() + 1))
    # its temperature is the one fitted on the out-of-fold logits
    assert run.data.metrics["temperature"] == pytest.approx(cv.temperature)
    assert load_model_dir(Path(result.model_dir)).temperature == pytest.approx(cv.temperature)
    assert set(result.validation["by_modality"]) == {"text_only", "image_only", "both"}

    version = register(result.model_uri, settings.registered_model_name, {}, {})
    registered = load_classifier(f"models:/{settings.registered_model_name}/{version}")
    local = load_model_dir(Path(result.model_dir))
    assert registered.family == "multimodal-effnet"
    rows = splits["test"].head(12)
    np.testing.assert_allclose(
        registered.predict_proba(rows), local.predict_proba(rows), rtol=1e-5, atol=1e-6
    )
    assert not list(isolated_settings.rglob("multimodal-effnet-*.pt"))  # checkpoint cleaned up

    promote(settings.registered_model_name, version)
    predictor = Predictor.load(f"models:/{settings.registered_model_name}@champion")
    assert predictor.model_version == version and predictor.family == "multimodal-effnet"


# ---- the serving predictor over this model ---------------------------------------------


def test_predictor_answers_raw_fields_like_the_model_answers_prepared_rows(trained, splits):
    model, _ = trained
    rows = both_modality_rows(splits["test"], n=4)
    predictor = Predictor(model, "memory")
    inputs = [
        ProductInput(designation=text, image=Path(path).read_bytes(), product_id=str(i))
        for i, (text, path) in enumerate(zip(rows["text"], rows["image_path"]))
    ]
    answers = predictor.predict(inputs, top_k=3)
    expected = model.predict_proba(rows[["text", "image_path"]].reset_index(drop=True))
    for answer, row_proba in zip(answers, expected):
        assert answer.inputs == "text+image" and len(answer.image_sha256 or "") == 64
        assert [s.probability for s in answer.top] == sorted(
            (s.probability for s in answer.top), reverse=True
        )
        assert answer.prdtypecode == int(model.classes_[row_proba.argmax()])
        assert answer.top[0].probability == pytest.approx(row_proba.max(), abs=1e-5)
        assert all(s.name_fr and s.name_en for s in answer.top)  # names from the taxonomy
    assert [a.product_id for a in answers] == ["0", "1", "2", "3"]

    photo = Path(rows["image_path"].iloc[0]).read_bytes()
    only_photo, only_text = predictor.predict(
        [ProductInput(image=photo), ProductInput(designation=rows["text"].iloc[0])]
    )
    assert (only_photo.inputs, only_text.inputs) == ("image", "text")
    assert len(only_photo.top) == 5


@pytest.mark.parametrize(
    "make_input,reason",
    [
        (lambda photo: ProductInput(designation="  ", description=""), "no title"),
        (lambda photo: ProductInput(image=b"GIF89a not really"), "photo refused: not an image"),
        (lambda photo: ProductInput(image=photo[: len(photo) // 2]), "photo refused: corrupt"),
        (lambda photo: ProductInput(image=photo * 100), "over the"),
    ],
)
def test_predictor_refuses_unusable_products_with_a_reason(trained, splits, make_input, reason):
    model, _ = trained
    path = splits["test"].loc[splits["test"]["image_path"] != "", "image_path"].iloc[0]
    predictor = Predictor(model, "memory", max_image_bytes=2_000_000)
    good = ProductInput(designation="piscine tubulaire")
    with pytest.raises(InvalidProductError, match=reason) as error:
        predictor.predict([good, make_input(Path(path).read_bytes())])
    assert str(error.value).startswith("product 1:")  # names the product by position
