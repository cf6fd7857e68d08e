"""Family `multimodal-clip`: a CLIP-style dual encoder fine-tuned on the catalogue.

The photo goes through CLIP's vision tower, the title + description through its text tower;
both projected embeddings (zeroed when the product lacks that modality) and the presence flags
feed a small fusion head. Only the last layers of each tower are fine-tuned (the rest stays
frozen, which keeps CPU training affordable and the pretrained features intact), with a much
smaller learning rate than the freshly initialised head.

Backbones: any Hugging Face dual encoder with ``text_model`` / ``vision_model`` towers and
``get_text_features`` / ``get_image_features`` (CLIP, MetaCLIP 2, AltCLIP), loaded from a local
folder or the local Hugging Face cache only: training never downloads weights. The saved model
folder holds the fine-tuned backbone (``save_pretrained``), so it loads without the original.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from prodclass.data.images import ImageError, open_image
from prodclass.models.base import FamilyParams, ProductClassifier
from prodclass.models.device import autocast, to_device
from prodclass.models.multimodal import fusion_head, hide_one_modality
from prodclass.models.torch_loop import (
    LoopConfig,
    checkpoint_path_for,
    class_weights,
    fit_and_calibrate,
    seed_everything,
)

log = logging.getLogger(__name__)

BACKBONE_DIR = "clip"  # fine-tuned backbone + tokenizer + image processor (save_pretrained)
HEAD_FILE = "head.pt"  # fusion head weights, network config, temperature


class MultimodalClipParams(FamilyParams):
    backbone: str | None = None  # local folder or cached hub id; None: PRODCLASS_CLIP_MODEL
    vision_trainable_layers: int = Field(2, ge=0)  # last transformer layers fine-tuned
    text_trainable_layers: int = Field(2, ge=0)  # 0: that tower is a frozen feature extractor
    hidden: int = Field(256, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    modality_dropout: float = Field(0.25, ge=0, le=1)
    hflip: bool = True  # mirror half of the training photos each epoch
    max_text_tokens: int = Field(77, ge=4)  # CLIP's text tower reads at most 77 tokens
    epochs: int = Field(5, ge=1)
    patience: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)  # fusion head
    tower_lr: float = Field(1e-5, gt=0)  # discriminative: pretrained layers move 100x slower
    weight_decay: float = Field(0.01, ge=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    threads: int = Field(2, ge=1)
    seed: int = 42


class BackboneError(ValueError):
    """The CLIP backbone cannot be loaded from local files; the message says what to do."""


# ---- backbone ---------------------------------------------------------------------------


def resolve_backbone(name: str | None) -> str:
    if name:
        return name
    from prodclass.settings import get_settings

    return get_settings().clip_model


def load_backbone(name: str) -> tuple[nn.Module, Any, Any]:
    """(model, tokenizer, image processor) from a local folder or the local hub cache.

    ``local_files_only`` everywhere: a hub id that is not cached fails at once instead of
    trying the network. The PIL image backend is forced so that preprocessing (hence
    predictions) does not change when torchvision happens to be installed.
    """
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(name, local_files_only=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(name, local_files_only=True, backend="pil")
    except (OSError, ValueError) as exc:
        if Path(name).is_dir():
            raise BackboneError(
                f"CLIP backbone folder {name} cannot be loaded ({_why(Path(name), exc)}): it "
                "must hold a CLIP-style model, its tokenizer and its image processor, as "
                "written by save_pretrained."
            ) from exc
        raise BackboneError(
            f"CLIP backbone {name!r} is neither a local folder nor in the local Hugging Face "
            "cache (the hub is never contacted), so point PRODCLASS_CLIP_MODEL or the "
            "family's `backbone` parameter at a local folder holding a CLIP model saved with "
            "save_pretrained."
        ) from exc
    missing = [
        attr
        for attr in ("text_model", "vision_model", "get_text_features", "get_image_features")
        if not hasattr(model, attr)
    ]
    if missing:
        raise BackboneError(
            f"CLIP backbone {name} is a {type(model).__name__}, not a dual encoder with text "
            f"and vision towers (it lacks {', '.join(missing)})."
        )
    model.eval()
    return model, tokenizer, processor


def save_backbone(clip: nn.Module, inputs: ClipInputs, folder: Path) -> None:
    """The (fine-tuned) backbone with its tokenizer and image processor, as ``load_backbone``
    reads it back: the model folder then loads without the original weights."""
    clip.save_pretrained(folder)
    inputs.tokenizer.save_pretrained(folder)
    inputs.image_processor.save_pretrained(folder)


def _why(folder: Path, exc: Exception) -> str:
    """The missing files of a backbone folder, else the first clause of the loader's error."""
    expected = {
        "config.json": ("config.json",),
        "tokenizer.json": ("tokenizer.json", "vocab.json", "sentencepiece.bpe.model"),
        "preprocessor_config.json": ("preprocessor_config.json", "processor_config.json"),
    }
    missing = [k for k, names in expected.items() if not any((folder / n).is_file() for n in names)]
    if missing:
        return "no " + ", ".join(missing)
    first = re.split(r"\.(\s|$)", str(exc).strip(), maxsplit=1)[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def tower_layers(tower: nn.Module) -> nn.ModuleList:
    """The transformer layers of a tower: its longest ModuleList named ``layers``/``layer``."""
    found = [
        module
        for name, module in tower.named_modules()
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "layer")
    ]
    if not found:
        raise BackboneError(f"cannot find the transformer layers of {type(tower).__name__}")
    return max(found, key=len)


def freeze_tower(tower: nn.Module, projection: nn.Module | None, trainable_layers: int) -> None:
    """Freeze the tower except its last ``trainable_layers`` layers and what comes after them
    (final layer norm, pooling head) plus the projection; 0 freezes the whole tower.

    "After" is parameter registration order, which is computation order in these towers
    (embeddings, pre-norm, layers, post-norm): frozen parameters never sit downstream of
    trained ones, so the frozen prefix needs no gradients at all.
    """
    layers = tower_layers(tower)
    k = min(trainable_layers, len(layers))
    first = {id(q) for q in layers[len(layers) - k].parameters()} if k else set()
    trainable = False
    for q in tower.parameters():
        trainable = trainable or id(q) in first
        q.requires_grad_(trainable)
    if projection is not None:
        projection.requires_grad_(k > 0)


# ---- network ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipFusionConfig:
    n_classes: int
    image_dim: int  # width of the backbone's projected image embedding (512 for ViT-B/32)
    text_dim: int  # width of its projected text embedding
    hidden: int = 256
    dropout: float = 0.2
    vision_trainable_layers: int = 2
    text_trainable_layers: int = 2


def embedding_widths(clip: nn.Module) -> tuple[int, int]:
    """(image, text) embedding widths, read from one tiny forward pass: the backbones differ
    in where they keep that number (projection_dim, project_dim, a pooling head...)."""
    vision = clip.config.vision_config
    pixels = torch.zeros(
        1, getattr(vision, "num_channels", 3), vision.image_size, vision.image_size
    )
    text = clip.config.text_config
    ids = [i for i in (text.bos_token_id, text.eos_token_id) if i is not None] or [0]
    ids = [min(i, text.vocab_size - 1) for i in ids]
    with torch.inference_mode():
        image = clip.get_image_features(pixel_values=pixels).pooler_output
        words = clip.get_text_features(input_ids=torch.tensor([ids])).pooler_output
    return int(image.shape[-1]), int(words.shape[-1])


class ClipFusionNet(nn.Module):
    def __init__(self, clip: nn.Module, config: ClipFusionConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = clip
        clip.requires_grad_(False)  # logit scale & co. are unused; towers unfreeze their ends
        freeze_tower(
            clip.vision_model,
            getattr(clip, "visual_projection", None),
            config.vision_trainable_layers,
        )
        freeze_tower(
            clip.text_model,
            getattr(clip, "text_projection", None),
            config.text_trainable_layers,
        )
        h = config.hidden
        # LayerNorm, not L2 normalisation: scale-free like CLIP's cosine, but learnable
        self.image_proj = nn.Sequential(
            nn.LayerNorm(config.image_dim),
            nn.Dropout(config.dropout),
            nn.Linear(config.image_dim, h),
            nn.GELU(),
        )
        self.text_proj = nn.Sequential(
            nn.LayerNorm(config.text_dim),
            nn.Dropout(config.dropout),
            nn.Linear(config.text_dim, h),
            nn.GELU(),
        )
        # text and image parts, then the has_text and has_image flags
        self.head = fusion_head(2 * h + 2, h, config.n_classes, config.dropout)

    def head_parameters(self) -> list[nn.Parameter]:
        return [q for name, q in self.named_parameters() if not name.startswith("clip.")]

    def tower_parameters(self) -> list[nn.Parameter]:
        return [q for q in self.clip.parameters() if q.requires_grad]

    def forward(
        self,
        input_ids: torch.Tensor,  # (B_txt, L) tokens of the rows with has_text, batch order
        attention_mask: torch.Tensor,  # (B_txt, L)
        pixel_values: torch.Tensor,  # (B_img, 3, S, S) photos of the rows with has_image
        has_text: torch.Tensor,  # (B,) bool; has_text.sum() == B_txt
        has_image: torch.Tensor,  # (B,) bool; has_image.sum() == B_img
    ) -> torch.Tensor:
        batch, h = has_text.shape[0], self.config.hidden
        t = torch.zeros(batch, h, device=has_text.device)  # (B, H) zeros stand for "no text"
        text_rows = has_text.nonzero().squeeze(1)  # (B_txt,)
        if len(text_rows) > 0:
            emb = self.clip.get_text_features(
                input_ids=input_ids, attention_mask=attention_mask
            ).pooler_output  # (B_txt, text_dim)
            projected = self.text_proj(emb)  # float16 under CUDA autocast
            t = t.to(projected.dtype).index_copy(0, text_rows, projected)
        i = torch.zeros(batch, h, device=has_image.device)  # (B, H)
        photo_rows = has_image.nonzero().squeeze(1)  # (B_img,)
        if len(photo_rows) > 0:
            emb = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
            projected = self.image_proj(emb)  # (B_img, H) from emb: (B_img, image_dim)
            i = i.to(projected.dtype).index_copy(0, photo_rows, projected)
        flags = torch.stack([has_text, has_image], dim=1).float()  # (B, 2)
        return self.head(torch.cat([t, i, flags], dim=1))  # (B, n_classes)


# ---- inputs -----------------------------------------------------------------------------


class ClipInputs:
    """Turns product rows into network inputs: tokens for texts, pixels for photos."""

    def __init__(self, tokenizer: Any, image_processor: Any, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_tokens = max_tokens

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), each (len(texts), L); truncated to ``max_tokens``."""
        if not texts:
            empty = torch.zeros((0, 1), dtype=torch.long)
            return empty, empty
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"]

    def pixels(self, paths: list[str]) -> torch.Tensor:
        """(len(paths), 3, S, S) preprocessed photos; an unusable file raises naming it."""
        if not paths:
            return torch.zeros((0, 3, 1, 1))  # never read: the net skips an empty tower
        images = []
        for path in paths:
            try:
                images.append(open_image(Path(path)))
            except ImageError as exc:
                raise ValueError(f"cannot use image {path}: {exc}") from exc
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


# ---- the family -------------------------------------------------------------------------


class MultimodalClipClassifier(ProductClassifier):
    family = "multimodal-clip"
    Params = MultimodalClipParams
    params: MultimodalClipParams

    def __init__(self, params: MultimodalClipParams, classes: list[int] | None = None) -> None:
        super().__init__(params, classes)
        self.net: ClipFusionNet | None = None
        self.inputs: ClipInputs | None = None
        self.temperature = 1.0
        self.backbone_source = ""  # where the pretrained backbone came from (provenance)

    def _build(self, backbone: str, config: ClipFusionConfig | None) -> ClipFusionNet:
        """Load the backbone and put the fusion net on it; config None: read the widths."""
        clip, tokenizer, processor = load_backbone(backbone)
        if config is None:
            image_dim, text_dim = embedding_widths(clip)
            p = self.params
            config = ClipFusionConfig(
                n_classes=len(self.classes_),
                image_dim=image_dim,
                text_dim=text_dim,
                hidden=p.hidden,
                dropout=p.dropout,
                vision_trainable_layers=p.vision_trainable_layers,
                text_trainable_layers=p.text_trainable_layers,
            )
        limit = getattr(clip.config.text_config, "max_position_embeddings", None)
        max_tokens = min(self.params.max_text_tokens, limit or self.params.max_text_tokens)
        self.inputs = ClipInputs(tokenizer, processor, max_tokens)
        self.net = ClipFusionNet(clip, config).to(self.device)
        return self.net

    def _batch(
        self, products: pd.DataFrame, rows: np.ndarray, rng: np.random.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Network inputs of ``rows``; in training ``rng`` drives modality dropout (a hidden
        modality is not even encoded) and photo mirroring."""
        assert self.inputs is not None
        texts = products["text"].to_numpy()[rows]
        paths = products["image_path"].to_numpy()[rows]
        has_text, has_image = texts != "", paths != ""
        if rng is not None and self.params.modality_dropout > 0:
            has_text, has_image = hide_one_modality(
                has_text, has_image, self.params.modality_dropout, rng
            )
        input_ids, attention_mask = self.inputs.tokens([str(t) for t in texts[has_text]])
        pixels = self.inputs.pixels([str(p) for p in paths[has_image]])
        if rng is not None and self.params.hflip and len(pixels):
            flip = torch.from_numpy(rng.random(len(pixels)) < 0.5)
            pixels[flip] = pixels[flip].flip(-1)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixels,
            "has_text": torch.from_numpy(has_text),
            "has_image": torch.from_numpy(has_image),
        }

    def _logits(self, products: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
        assert self.net is not None
        self.net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(products), batch_size):
                rows = np.arange(start, min(start + batch_size, len(products)))
                batch = to_device(self._batch(products, rows), self.device)
                with autocast(self.device):
                    out.append(self.net(**batch).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)), np.float32)

    # ---- training -----------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, Any]:
        if val is None or val.empty:
            raise ValueError(f"{self.family} needs a validation split for early stopping")
        p = self.params
        seed_everything(p.seed)
        torch.set_num_threads(p.threads)
        self.classes_ = np.asarray(sorted(int(c) for c in train["label"].unique()), np.int64)
        index = {c: i for i, c in enumerate(self.classes_)}
        y_train = np.asarray([index[int(c)] for c in train["label"]])
        y_val = np.asarray([index.get(int(c), -1) for c in val["label"]])

        self.backbone_source = resolve_backbone(p.backbone)
        net = self._build(self.backbone_source, None)
        n_tower = sum(q.numel() for q in net.tower_parameters())
        n_head = sum(q.numel() for q in net.head_parameters())
        n_all = sum(q.numel() for q in net.parameters())
        log.info(
            "%s on %s: %d train / %d val products; training %d head + %d backbone parameters "
            "(%d frozen)",
            self.family,
            self.backbone_source,
            len(train),
            len(val),
            n_head,
            n_tower,
            n_all - n_head - n_tower,
        )
        groups = [{"params": net.head_parameters(), "lr": p.lr}]
        if n_tower:
            groups.append({"params": net.tower_parameters(), "lr": p.tower_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=p.weight_decay)
        loss_fn = nn.CrossEntropyLoss(
            weight=class_weights(y_train, len(self.classes_)), label_smoothing=p.label_smoothing
        )

        def batches(rng: np.random.Generator):
            order = rng.permutation(len(train))
            for start in range(0, len(order), p.batch_size):
                rows = order[start : start + p.batch_size]
                yield self._batch(train, rows, rng), torch.from_numpy(y_train[rows])

        # the resolved backbone is part of the key: another PRODCLASS_CLIP_MODEL never resumes
        key = p.model_copy(update={"backbone": self.backbone_source}).model_dump_json()
        checkpoint = checkpoint_path_for(self.family, key, train.index)
        self.temperature, facts = fit_and_calibrate(
            net,
            optimizer,
            loss_fn,
            batches,
            lambda: self._logits(val),
            y_val,
            LoopConfig(epochs=p.epochs, patience=p.patience),
            seed=p.seed,
            checkpoint_path=checkpoint,
            on_epoch_end=self.epoch_callback,
        )
        return facts | {
            "n_train_rows": len(train),
            "trainable_backbone_params": n_tower,
            "frozen_backbone_params": n_all - n_head - n_tower,
        }

    # ---- inference ----------------------------------------------------------------------
    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("model is not trained")
        torch.set_num_threads(self.predict_threads)
        logits = self._logits(products) / self.temperature
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def embed(self, products: pd.DataFrame) -> dict[str, Any]:
        """Text and image: CLIP's own text and image features (with the fine-tuned ends)."""
        assert self.net is not None and self.inputs is not None
        torch.set_num_threads(self.predict_threads)
        self.net.eval()
        clip = self.net.clip
        texts = products["text"].to_numpy()
        paths = products["image_path"].to_numpy()
        out = {
            "text": np.zeros((len(products), self.net.config.text_dim), np.float32),
            "image": np.zeros((len(products), self.net.config.image_dim), np.float32),
        }
        with torch.inference_mode():
            for start in range(0, len(products), 64):
                rows = np.arange(start, min(start + 64, len(products)))
                has_text, has_image = rows[texts[rows] != ""], rows[paths[rows] != ""]
                if len(has_text):
                    ids, mask = self.inputs.tokens([str(t) for t in texts[has_text]])
                    ids, mask = ids.to(self.device), mask.to(self.device)
                    emb = clip.get_text_features(input_ids=ids, attention_mask=mask)
                    out["text"][has_text] = emb.pooler_output.float().cpu().numpy()
                if len(has_image):
                    pixels = self.inputs.pixels([str(p) for p in paths[has_image]])
                    emb = clip.get_image_features(pixel_values=pixels.to(self.device))
                    out["image"][has_image] = emb.pooler_output.float().cpu().numpy()
        return out

    # ---- artefact -----------------------------------------------------------------------
    def _save_files(self, path: Path) -> None:
        assert self.net is not None and self.inputs is not None
        save_backbone(self.net.clip, self.inputs, path / BACKBONE_DIR)
        torch.save(
            {
                "state_dict": {
                    k: v for k, v in self.net.state_dict().items() if not k.startswith("clip.")
                },
                "config": json.dumps(asdict(self.net.config)),
                "temperature": self.temperature,
                "backbone_source": self.backbone_source,
            },
            path / HEAD_FILE,
        )

    def _load_files(self, path: Path) -> None:
        # map_location: a model saved on a GPU loads on a CPU-only machine, and the reverse
        saved = torch.load(path / HEAD_FILE, weights_only=True, map_location=self.device)
        config = ClipFusionConfig(**json.loads(saved["config"]))
        net = self._build(str(path / BACKBONE_DIR), config)
        missing, unexpected = net.load_state_dict(saved["state_dict"], strict=False)
        missing = [k for k in missing if not k.startswith("clip.")]
        if missing or unexpected:
            raise ValueError(
                f"{path / HEAD_FILE} does not match the network: missing {missing}, "
                f"unexpected {unexpected}"
            )
        net.eval()
        self.temperature = float(saved["temperature"])
        self.backbone_source = str(saved["backbone_source"])
