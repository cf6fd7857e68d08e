"""The fusion net (``multimodal.py``) as `multimodal-effnet` builds, starts and stores it.

Its photo branch is the pretrained EfficientNet-Lite's last blocks (the trunk before them runs
once per photo, cached); training starts from the stacked members' late fusion and moves the
pretrained blocks slower than the new layers. ``net.pt`` holds the weights with the config,
temperature and encoder version; the pretrained weights come from the pip package, so the model
folder stays small.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prodclass.models.device import autocast, to_device
from prodclass.models.effnet_inputs import NetInputs, net_batch
from prodclass.models.image_effnet import (
    EffNetConfig,
    EffNetTail,
    encoder_version,
    load_pretrained_effnet,
)
from prodclass.models.multimodal import MultimodalConfig, MultimodalNet, fit_stack_gains
from prodclass.models.text_hashed import HashedTextConfig

NET_FILE = "net.pt"


def new_net(
    n_classes: int,
    hidden: int,
    dropout: float,
    stack_members: int,
    text: HashedTextConfig | None,
    image: EffNetConfig | None,
) -> MultimodalNet:
    """A fresh net; with ``image``, its photo branch is that pretrained network's tail."""
    tail = EffNetTail(load_pretrained_effnet(image.variant), image) if image is not None else None
    config = MultimodalConfig(
        n_classes=n_classes,
        hidden=hidden,
        dropout=dropout,
        image_dim=tail.out_dim if tail is not None else 0,
        stack_dim=n_classes if stack_members else 0,
        stack_members=stack_members,
        text=text,
    )
    return MultimodalNet(config, tail)


def start_from_members(
    net: MultimodalNet, inp: NetInputs, targets: np.ndarray, weight: torch.Tensor
) -> None:
    """Set the members' gains to the best late fusion of the training rows' out-of-fold
    answers (``fit_stack_gains``, on the CPU: call it before moving the net)."""
    if net.stack_gain is None:
        return
    flags = np.stack([inp.has_text, inp.has_image, inp.has_ocr], axis=1)
    fit_stack_gains(
        net.stack_gain,
        torch.from_numpy(flags.astype(np.float32)),
        torch.from_numpy(inp.stacked["full"]),
        torch.from_numpy(targets),
        weight,
    )


def param_groups(net: MultimodalNet, lr: float, image_lr: float) -> list[dict[str, Any]]:
    """Optimizer groups: the pretrained image blocks learn at ``image_lr``, the rest at ``lr``."""
    tail = net.image_tail
    tail_params = {id(q) for q in tail.parameters()} if tail is not None else set()
    groups = [{"params": [q for q in net.parameters() if id(q) not in tail_params], "lr": lr}]
    if tail is not None:
        groups.append({"params": list(tail.parameters()), "lr": image_lr})
    return groups


def logits(
    net: MultimodalNet, inp: NetInputs, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """(N, C) logits of the products of ``inp`` (full variant), in eval mode on ``device``."""
    net.eval()
    n = len(inp.has_text)
    out = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(start + batch_size, n))
            batch = to_device(net_batch(inp, rows), device)
            with autocast(device):
                out.append(net(**batch).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, net.config.n_classes), np.float32)


def save_net(
    path: Path, net: MultimodalNet, temperature: float, effnet_config: EffNetConfig
) -> None:
    """Write the net, its config and calibration temperature into folder ``path``."""
    torch.save(
        {
            "state_dict": net.state_dict(),
            "config": json.dumps(asdict(net.config)),
            "temperature": temperature,
            "encoder_version": encoder_version(effnet_config),
        },
        path / NET_FILE,
    )


def load_net(
    path: Path, effnet_config: EffNetConfig, device: torch.device
) -> tuple[MultimodalNet, float]:
    """The net of folder ``path`` on ``device``, in eval mode, and its temperature."""
    # map_location: a model saved on a GPU loads on a CPU-only machine, and the reverse
    saved = torch.load(path / NET_FILE, weights_only=True, map_location=device)
    config = json.loads(saved["config"])
    text = config.pop("text")
    config = MultimodalConfig(**config, text=HashedTextConfig(**text) if text else None)
    tail = None
    if config.image_dim:
        tail = EffNetTail(load_pretrained_effnet(effnet_config.variant), effnet_config)
    net = MultimodalNet(config, tail).to(device)
    net.load_state_dict(saved["state_dict"])
    net.eval()
    return net, float(saved["temperature"])
