"""The one epoch loop every PyTorch family trains with.

Why shared: early stopping on validation weighted F1, keeping the best weights, per-epoch
history, progress bars and checkpoint/resume are the same whatever the network; each family
only says how to make its batches and how to score the validation split.

Checkpoints: after every epoch the loop writes model + optimizer + loop state to
``checkpoint_path`` (atomically). A run started again with the same checkpoint path resumes
after the last finished epoch, with the same random streams, so an interrupted training ends
where an uninterrupted one would have. The family decides the path (it should change with the
data and the hyper-parameters) and deletes the file once the model is saved.

Device: the loop trains where the net's parameters are (the family moved it to
``ProductClassifier.device``). It moves each batch there (pinned memory on CUDA) and, on CUDA
only, runs the forward pass in float16 autocast with a gradient scaler; on the CPU the scaler
is a pass-through and every step is the plain float32 one. Checkpoints load onto that device.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.metrics import f1_score

from prodclass.files import atomic_write
from prodclass.models.device import autocast, grad_scaler, tensor_to, to_device

log = logging.getLogger(__name__)

# One training batch: keyword inputs of the network's forward, and the target class indices.
Batch = tuple[dict[str, Any], torch.Tensor]


def seed_everything(seed: int) -> None:
    """Same seed, same data, same params -> same metrics (on one machine and thread count)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 20
    patience: int = 4  # epochs without a better validation F1 before stopping
    max_grad_norm: float | None = 5.0
    progress: bool = True


@dataclass
class LoopResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_weighted_f1: float = -1.0
    best_epoch: int = 0
    resumed_from_epoch: int = 0


def train_epochs(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_batches: Callable[[np.random.Generator], Iterable[Batch]],
    val_logits: Callable[[], np.ndarray],
    y_val: np.ndarray,
    config: LoopConfig,
    seed: int,
    checkpoint_path: Path | None = None,
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> LoopResult:
    """Train ``net`` in place; on return it holds the weights of its best validation epoch.

    ``train_batches(rng)`` yields one epoch of batches (shuffled with ``rng``);
    ``val_logits()`` returns (N_val, C) logits of the validation rows, whose class indices
    are ``y_val`` (-1 for a class the model does not know: counted as an error).
    ``on_epoch_end(epoch, val_f1)`` may raise to stop early.
    Batches may be built on the CPU: they are moved to the net's device here.
    """
    device = _device_of(net)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.to(device)  # e.g. the class weights of a CrossEntropyLoss
    scaler = grad_scaler(device)
    rng = np.random.default_rng(seed)
    result = LoopResult()
    best_state: dict[str, Any] | None = None
    stale = 0
    start_epoch = 0
    if checkpoint_path is not None and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, weights_only=False, map_location=device)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"].cpu())  # the CPU generator's state stays there
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        result = state["result"]
        best_state, stale, start_epoch = state["best_state"], state["stale"], state["epoch"]
        result.resumed_from_epoch = start_epoch
        log.info("resuming from %s after epoch %d", checkpoint_path, start_epoch)

    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not config.progress,
        transient=True,
    )
    with bar:
        task = bar.add_task("epochs", total=config.epochs, completed=start_epoch, status="")
        for epoch in range(start_epoch + 1, config.epochs + 1):
            if stale >= config.patience:
                break
            net.train()
            total, seen = 0.0, 0
            for inputs, targets in train_batches(rng):
                inputs, targets = to_device(inputs, device), tensor_to(targets, device)
                with autocast(device):
                    loss = loss_fn(net(**inputs), targets)
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                if config.max_grad_norm:
                    scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
                    torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                total += loss.item() * len(targets)
                seen += len(targets)
            net.eval()
            with torch.inference_mode():
                predicted = val_logits().argmax(axis=1)
            val_f1 = float(f1_score(y_val, predicted, average="weighted", zero_division=0))
            train_loss = total / max(seen, 1)
            # "epoch_" names: MLflow must not mistake a curve for the final validation metric
            result.history.append(
                {"epoch": epoch, "epoch_train_loss": train_loss, "epoch_val_weighted_f1": val_f1}
            )
            log.info("epoch %d: train loss %.4f, val weighted F1 %.4f", epoch, train_loss, val_f1)
            if val_f1 > result.best_val_weighted_f1:
                result.best_val_weighted_f1, result.best_epoch = val_f1, epoch
                best_state, stale = copy.deepcopy(net.state_dict()), 0
            else:
                stale += 1
            bar.update(task, advance=1, status=f"val F1 {val_f1:.3f}")
            if checkpoint_path is not None:
                _save_checkpoint(
                    checkpoint_path,
                    {
                        "net": net.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state(),
                        "scaler": scaler.state_dict(),
                        "result": result,
                        "best_state": best_state,
                        "stale": stale,
                        "epoch": epoch,
                    },
                )
            if on_epoch_end is not None:
                try:
                    on_epoch_end(epoch, val_f1)
                except Exception:
                    # stopped on purpose: nothing to resume, so no checkpoint kept.
                    # A crash or Ctrl-C (KeyboardInterrupt, not an Exception) keeps it.
                    if checkpoint_path is not None:
                        checkpoint_path.unlink(missing_ok=True)
                    raise
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return result


def fit_and_calibrate(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_batches: Callable[[np.random.Generator], Iterable[Batch]],
    val_logits: Callable[[], np.ndarray],
    y_val: np.ndarray,
    config: LoopConfig,
    seed: int,
    checkpoint_path: Path,
    on_epoch_end: Callable[[int, float], None] | None = None,
    calibrate: bool = True,
) -> tuple[float, dict[str, Any]]:
    """What every torch family's ``fit`` ends with: the epoch loop (``train_epochs``), the
    checkpoint removed once it is no longer needed, then the temperature fitted on the
    validation rows whose class the model knows. Returns (temperature, the facts to log)."""
    result = train_epochs(
        net, optimizer, loss_fn, train_batches, val_logits, y_val, config, seed,
        checkpoint_path=checkpoint_path, on_epoch_end=on_epoch_end,
    )  # fmt: skip
    checkpoint_path.unlink(missing_ok=True)
    known = y_val >= 0
    temperature = 1.0
    if calibrate and known.any():
        from prodclass.models.calibration import fit_temperature

        temperature = fit_temperature(val_logits()[known], y_val[known])
    return temperature, {
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_weighted_f1": result.best_val_weighted_f1,
        "resumed_from_epoch": result.resumed_from_epoch,
        "temperature": temperature,
        "history": result.history,
    }


def _device_of(net: torch.nn.Module) -> torch.device:
    """Where the net's parameters are (the CPU for a net without any)."""
    for parameter in net.parameters():
        return parameter.device
    return torch.device("cpu")


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def class_weights(y: np.ndarray, n_classes: int, power: float = 0.5) -> torch.Tensor:
    """Inverse-frequency loss weights, softened by ``power`` (0.5: square root), mean 1.

    The real catalogue is unbalanced (one class is 12%, another 1%); full inverse weights
    over-correct on rare classes, the square root is the usual compromise.
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = (counts.sum() / np.maximum(counts, 1)) ** power
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def checkpoint_path_for(family: str, params_json: str, train_index: Iterable[str]) -> Path:
    """Where a training of ``family`` with these params on these rows checkpoints.

    Keyed by params and training rows, so a changed configuration never resumes from a
    checkpoint that is not its own.
    """
    import hashlib

    from prodclass.settings import get_settings

    digest = hashlib.sha256(params_json.encode())
    for row in train_index:
        digest.update(str(row).encode() + b"\0")
    return get_settings().state_dir / "checkpoints" / f"{family}-{digest.hexdigest()[:16]}.pt"
