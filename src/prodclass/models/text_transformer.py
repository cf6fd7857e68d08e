"""Family `text-transformer`: a BERT-class encoder (CamemBERT, multilingual BERT...) fine-tuned
with a linear head on the pooled token states.

The backbone is a local folder or a Hugging Face id already in the local cache: model hubs are
never contacted. The saved model folder holds the fine-tuned encoder and its tokenizer
(``save_pretrained``) next to the head, so it loads from the folder alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from prodclass.models.base import FamilyParams, ProductClassifier
from prodclass.models.device import autocast, to_device
from prodclass.models.text_lstm import class_prior, data_key, label_indices, torch_threads
from prodclass.models.torch_loop import (
    Batch,
    LoopConfig,
    checkpoint_path_for,
    class_weights,
    fit_and_calibrate,
    seed_everything,
)

log = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
HEAD_FILE = "head.pt"


class TextTransformerParams(FamilyParams):
    backbone: str | None = None  # None: settings.text_transformer_model
    max_length: int = 64  # subword tokens; the title and the start of the description
    pooling: Literal["mean", "cls"] = "mean"
    dropout: float = 0.1
    epochs: int = 3
    patience: int = 1
    batch_size: int = 16
    encoder_lr: float = 3e-5  # pretrained weights: small steps
    head_lr: float = 1e-3  # fresh head: large steps
    weight_decay: float = 0.01
    label_smoothing: float = 0.05
    class_weight_power: float = 0.5
    calibrate: bool = True  # temperature scaling on the validation rows
    threads: int = 2
    seed: int = 42


def resolve_backbone(backbone: str | None) -> str:
    if backbone is not None:
        return backbone
    from prodclass.settings import get_settings

    return get_settings().text_transformer_model


def load_backbone(name: str | Path) -> tuple[Any, nn.Module]:
    """Tokenizer and encoder from a local folder or the local hub cache, never the network."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name), local_files_only=True)
        encoder = AutoModel.from_pretrained(str(name), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"text-transformer backbone {str(name)!r} is not available offline: set the "
            "`backbone` parameter or PRODCLASS_TEXT_TRANSFORMER_MODEL to a local folder that "
            "holds its weights and tokenizer"
        ) from exc
    return tokenizer, encoder.float()


class EncoderClassifier(nn.Module):
    """(input_ids, attention_mask) (B, T) -> encoder -> pooled (B, H) -> logits (B, C)."""

    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float, pooling: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(encoder.config.hidden_size), n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden = states.last_hidden_state  # (B, T, H)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(self.dropout(pooled))  # (B, C)


class TextTransformerClassifier(ProductClassifier):
    """Products without text get the training class prior."""

    family = "text-transformer"
    Params = TextTransformerParams
    params: TextTransformerParams

    def __init__(self, params: TextTransformerParams, classes: list[int] | None = None) -> None:
        super().__init__(params, classes)
        self.net: EncoderClassifier | None = None
        self.tokenizer: Any = None
        self.prior = np.zeros(len(self.classes_), dtype=np.float32)
        self.temperature = 1.0

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.params.max_length,
            padding=True,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        assert self.net is not None
        self.net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = to_device(self._encode(texts[start : start + batch_size]), self.device)
                with autocast(self.device):
                    out.append(self.net(**batch).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)), np.float32)

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, Any]:
        p = self.params
        with torch_threads(p.threads):
            return self._fit(train, val, p)

    def _fit(
        self, train: pd.DataFrame, val: pd.DataFrame | None, p: TextTransformerParams
    ) -> dict[str, Any]:
        rows = train[train["text"].str.strip() != ""]
        if rows.empty:
            raise ValueError("text-transformer needs products with text; the training set has none")
        val_rows = val[val["text"].str.strip() != ""] if val is not None else None
        if val_rows is None or val_rows.empty:
            raise ValueError(
                "text-transformer needs validation products with text for early stopping"
            )
        backbone = resolve_backbone(p.backbone)
        seed_everything(p.seed)
        self.tokenizer, encoder = load_backbone(backbone)

        self.classes_ = np.asarray(sorted(int(c) for c in rows["label"].unique()), np.int64)
        n_classes = len(self.classes_)
        y_train = label_indices(rows["label"], self.classes_)
        y_val = label_indices(val_rows["label"], self.classes_)
        self.prior = class_prior(y_train, n_classes)
        self.net = EncoderClassifier(encoder, n_classes, p.dropout, p.pooling).to(self.device)

        head = [q for name, q in self.net.named_parameters() if not name.startswith("encoder.")]
        optimizer = torch.optim.AdamW(
            [
                {"params": list(self.net.encoder.parameters()), "lr": p.encoder_lr},
                {"params": head, "lr": p.head_lr},
            ],
            weight_decay=p.weight_decay,
        )
        loss_fn = nn.CrossEntropyLoss(
            weight=class_weights(y_train, n_classes, p.class_weight_power),
            label_smoothing=p.label_smoothing,
        )
        train_texts = rows["text"].tolist()
        val_texts = val_rows["text"].tolist()

        def train_batches(rng: np.random.Generator) -> Iterator[Batch]:
            order = rng.permutation(len(train_texts))
            for start in range(0, len(order), p.batch_size):
                chosen = order[start : start + p.batch_size]
                inputs = self._encode([train_texts[i] for i in chosen])
                yield inputs, torch.from_numpy(y_train[chosen])

        # the resolved backbone is part of the key: the same params may name another model
        checkpoint = checkpoint_path_for(
            self.family, p.model_dump_json() + "\x1f" + backbone, data_key(rows, val_rows)
        )
        self.temperature, facts = fit_and_calibrate(
            self.net,
            optimizer,
            loss_fn,
            train_batches,
            lambda: self._logits(val_texts),
            y_val,
            LoopConfig(epochs=p.epochs, patience=p.patience),
            seed=p.seed,
            checkpoint_path=checkpoint,
            on_epoch_end=self.epoch_callback,
            calibrate=p.calibrate,
        )
        return facts | {"n_train_text_rows": len(rows)}

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("model is not trained")
        has_text = (products["text"].fillna("").str.strip() != "").to_numpy()
        out = np.tile(self.prior, (len(products), 1))
        if has_text.any():
            with torch_threads(self.predict_threads):
                texts = products["text"][has_text].tolist()
                logits = self._logits(texts) / self.temperature
            out[has_text] = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        return out

    def _save_files(self, path: Path) -> None:
        assert self.net is not None
        self.net.encoder.save_pretrained(path / ENCODER_DIR)  # type: ignore[operator]
        self.tokenizer.save_pretrained(path / ENCODER_DIR)
        torch.save(
            {
                "head": self.net.head.state_dict(),
                "pooling": self.net.pooling,
                "prior": torch.from_numpy(self.prior),
                "temperature": self.temperature,
            },
            path / HEAD_FILE,
        )

    def _load_files(self, path: Path) -> None:
        # map_location: a model saved on a GPU loads on a CPU-only machine, and the reverse
        saved = torch.load(path / HEAD_FILE, weights_only=True, map_location=self.device)
        self.tokenizer, encoder = load_backbone(path / ENCODER_DIR)
        n_classes = int(saved["head"]["weight"].shape[0])
        self.net = EncoderClassifier(encoder, n_classes, self.params.dropout, saved["pooling"])
        self.net.head.load_state_dict(saved["head"])
        self.net.to(self.device).eval()
        self.prior = saved["prior"].cpu().numpy()
        self.temperature = float(saved["temperature"])
