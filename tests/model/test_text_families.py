"""Behaviour of the two neural text families trained on the real sample's train split.

`text-lstm` starts from the real spaCy French vectors; `text-transformer` is exercised with a
tiny BERT built here from a config (random weights, tokenizer trained on the sample's text),
since no pretrained transformer can be downloaded.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from prodclass.data.prepare import load_prepared
from prodclass.models import text_lstm
from prodclass.models.base import ProductClassifier
from prodclass.models.device import DeviceUnavailableError
from prodclass.models.registry import create, load_model_dir
from prodclass.settings import get_settings

# quick settings: the defaults aim at a minute of training, a test at a few seconds
LSTM = {"max_tokens": 48, "hidden": 64, "epochs": 3, "threads": 1}
TRANSFORMER = {
    "max_length": 48,
    "epochs": 3,
    "patience": 3,
    "batch_size": 32,
    "encoder_lr": 1e-3,
    "head_lr": 3e-3,
    "threads": 1,
}


class Interrupted(KeyboardInterrupt):
    """Stands for a crash or Ctrl-C mid-training (not a deliberate stop): the checkpoint stays."""


@pytest.fixture(scope="module")
def splits(sample_prepared) -> tuple[pd.DataFrame, pd.DataFrame]:
    return load_prepared(sample_prepared, "train"), load_prepared(sample_prepared, "val")


@pytest.fixture(scope="module")
def lstm(splits, state_dir) -> ProductClassifier:
    model = create("text-lstm", LSTM)
    model.fit(*splits)
    return model


@pytest.fixture(scope="module")
def tiny_backbone(splits, tmp_path_factory) -> Path:
    """A random-weight 2-layer BERT (hidden 32) and a WordPiece tokenizer of the sample."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    texts = [t for t in splits[0]["text"] if t]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=3000, special_tokens=specials)
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    folder = tmp_path_factory.mktemp("tiny-bert") / "backbone"
    tokenizer.save_pretrained(folder)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def transformer(splits, state_dir, tiny_backbone) -> ProductClassifier:
    model = create("text-transformer", {**TRANSFORMER, "backbone": str(tiny_backbone)})
    model.fit(*splits)
    return model


def text_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["text"] != ""]


# ---- text-lstm ---------------------------------------------------------------------------------
def test_lstm_beats_a_real_bar_on_validation_text(splits, lstm, state_dir):
    val = text_rows(splits[1])
    score = f1_score(val["label"], lstm.predict(val), average="weighted")
    # chance (majority class) is 0.02; these quick settings (3 epochs) reach ~0.66 here and
    # six epochs ~0.70 (2026-12-07)
    assert score > 0.45
    assert not list((state_dir / "checkpoints").glob("text-lstm-*")), "checkpoint not deleted"


def test_lstm_vocabulary_is_the_training_words_only(splits, lstm):
    seen = {w for t in splits[0]["text"] for w in text_lstm.tokenize(t, LSTM["max_tokens"])}
    words = lstm.vocabulary[len(text_lstm.SPECIALS) :]
    assert set(words) <= seen
    assert 1000 < len(words) < len(seen)  # rare words without a vector share the OOV row


# ---- both families -----------------------------------------------------------------------------
@pytest.fixture(params=["lstm", "transformer"])
def model(request) -> ProductClassifier:
    return request.getfixturevalue(request.param)


def test_probabilities_are_distributions_over_the_27_codes(splits, model):
    val = splits[1].head(60)
    proba = model.predict_proba(val)
    assert proba.shape == (60, 27)
    assert (proba >= 0).all()
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert sorted(model.classes_) == sorted(splits[0]["label"].unique())


def test_products_without_text_get_the_training_prior(splits, model):
    train, val = splits
    no_text = val[val["text"] == ""].head(5)
    assert len(no_text) == 5
    proba = model.predict_proba(pd.concat([no_text, text_rows(val).head(3)]))
    counts = text_rows(train)["label"].value_counts()
    prior = np.asarray([counts.get(c, 0) for c in model.classes_]) / counts.sum()
    assert np.allclose(proba[:5], prior, atol=1e-6)
    assert not np.allclose(proba[5:], prior, atol=1e-3)  # text rows are actually classified


def test_save_and_load_give_identical_predictions(
    splits, model, tmp_path, monkeypatch, tiny_backbone
):
    val = splits[1].head(80)
    saved = model.save(tmp_path / "m")
    # the folder must stand alone: no spaCy, no backbone folder
    monkeypatch.setitem(sys.modules, "spacy", None)
    text_lstm._spacy_vocab.cache_clear()
    hidden = tiny_backbone.with_name("moved")
    shutil.move(tiny_backbone, hidden)
    try:
        loaded = load_model_dir(saved)
        assert np.allclose(loaded.predict_proba(val), model.predict_proba(val), atol=1e-6)
    finally:
        shutil.move(hidden, tiny_backbone)
    assert list(loaded.classes_) == list(model.classes_)


def test_a_saved_model_loads_onto_the_configured_device(splits, model, tmp_path, monkeypatch):
    """The folder is read with map_location onto PRODCLASS_DEVICE: here the CPU (auto on a
    machine without a GPU); an explicit cuda without CUDA is refused with the reason."""
    val = splits[1].head(40)
    saved = model.save(tmp_path / "m")
    monkeypatch.setenv("PRODCLASS_DEVICE", "auto")
    get_settings.cache_clear()
    try:
        loaded = load_model_dir(saved)
    finally:
        get_settings.cache_clear()
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert loaded.device == expected
    assert {q.device.type for q in loaded.net.parameters()} == {expected.type}
    cpu = load_model_dir(saved, device="cpu")
    assert {q.device.type for q in cpu.net.parameters()} == {"cpu"}
    assert np.allclose(cpu.predict_proba(val), model.predict_proba(val), atol=1e-5)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="PRODCLASS_DEVICE=cuda"):
            load_model_dir(saved, device="cuda")


def test_transformer_beats_chance_on_validation_text(splits, transformer):
    val = text_rows(splits[1])
    score = f1_score(val["label"], transformer.predict(val), average="weighted")
    # random-init tiny BERT, 3 epochs: ~0.46 here; chance (majority class) is 0.02
    assert score > 0.3


# ---- resume ------------------------------------------------------------------------------------
def small_params(family: str, tiny_backbone: Path) -> dict:
    if family == "text-lstm":
        return {
            "vectors": None,
            "embed_dim": 32,
            "hidden": 16,
            "max_tokens": 24,
            "epochs": 4,
            "patience": 10,
            "calibrate": False,
            "threads": 1,
        }
    return {
        **TRANSFORMER,
        "backbone": str(tiny_backbone),
        "max_length": 24,
        "epochs": 4,
        "patience": 10,
        "calibrate": False,
    }


@pytest.mark.parametrize("family", ["text-lstm", "text-transformer"])
def test_interrupted_training_resumes_to_the_same_weights(splits, state_dir, tiny_backbone, family):
    train, val = text_rows(splits[0]).head(300), text_rows(splits[1]).head(100)
    params = small_params(family, tiny_backbone)
    straight = create(family, params)
    straight.fit(train, val)

    def stop_after_two(epoch: int, f1: float) -> None:
        if epoch == 2:
            raise Interrupted

    interrupted = create(family, params)
    interrupted.epoch_callback = stop_after_two
    with pytest.raises(Interrupted):
        interrupted.fit(train, val)
    assert list((state_dir / "checkpoints").glob(f"{family}-*.pt"))

    resumed = create(family, params)
    facts = resumed.fit(train, val)
    assert facts["resumed_from_epoch"] == 2
    assert len(facts["history"]) == 4
    a, b = straight.net.state_dict(), resumed.net.state_dict()  # type: ignore[attr-defined]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((state_dir / "checkpoints").glob(f"{family}-*.pt"))


# ---- errors ------------------------------------------------------------------------------------
def test_missing_backbone_is_one_clear_error(splits, tmp_path, monkeypatch):
    train, val = splits
    with pytest.raises(RuntimeError, match="backbone '.*missing' is not available offline"):
        create("text-transformer", {"backbone": str(tmp_path / "missing")}).fit(train, val)
    # the default comes from the settings; a hub id not in the local cache is never fetched
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PRODCLASS_TEXT_TRANSFORMER_MODEL", "no-such-org/no-such-model")
    get_settings.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="'no-such-org/no-such-model' is not available"):
            create("text-transformer", {}).fit(train, val)
    finally:
        get_settings.cache_clear()


def test_saved_transformer_without_its_encoder_fails_clearly(transformer, tmp_path):
    saved = transformer.save(tmp_path / "m")
    shutil.rmtree(saved / "encoder")
    with pytest.raises(RuntimeError, match="is not available offline"):
        load_model_dir(saved)


def test_missing_word_vectors_are_one_clear_error(splits):
    with pytest.raises(RuntimeError, match="'no_such_vectors' are not installed"):
        create("text-lstm", {"vectors": "no_such_vectors"}).fit(*splits)


def test_training_without_text_rows_is_refused(splits):
    train, val = splits
    for family in ("text-lstm", "text-transformer"):
        with pytest.raises(ValueError, match="needs products with text"):
            create(family, {}).fit(train[train["text"] == ""], val)
