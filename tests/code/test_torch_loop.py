"""The shared epoch loop: best-epoch weights, early stopping, checkpoint/resume, pruning stops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from prodclass.data.layout import ChallengeLayout, read_features, read_labels
from prodclass.data.text import product_text
from prodclass.models.text_hashed import HashedTextConfig, HashedTextEncoder, pack, text_to_ids
from prodclass.models.torch_loop import LoopConfig, class_weights, train_epochs

CONFIG = HashedTextConfig(buckets=2**12, dim=16)


class BagClassifier(torch.nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.encoder = HashedTextEncoder(CONFIG)
        self.out = torch.nn.Linear(CONFIG.dim, n_classes)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.out(self.encoder(ids, offsets))


@pytest.fixture(scope="module")
def texts(sample: Path) -> tuple[list[list[int]], np.ndarray]:
    """Real titles of the sample (rows with text), as n-gram ids, and class indices."""
    layout = ChallengeLayout(sample)
    rows = read_features(layout.x_train).join(read_labels(layout.y_train))
    rows["text"] = [product_text(d, s) for d, s in zip(rows["designation"], rows["description"])]
    rows = rows[rows["text"] != ""].head(400)
    codes = sorted(rows["prdtypecode"].unique())
    y = np.asarray([codes.index(c) for c in rows["prdtypecode"]])
    return [text_to_ids(t, CONFIG) for t in rows["text"]], y


def run(texts, epochs: int, checkpoint: Path | None, patience: int = 99, on_epoch_end=None):
    ids, y = texts
    train, val = np.arange(0, 300), np.arange(300, 400)
    torch.manual_seed(0)
    net = BagClassifier(int(y.max()) + 1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.05)

    def batches(rng):
        order = rng.permutation(train)
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            yield (
                dict(zip(("ids", "offsets"), pack([ids[r] for r in rows]))),
                torch.from_numpy(y[rows]),
            )

    def val_logits():
        return net(*pack([ids[r] for r in val])).numpy()

    config = LoopConfig(epochs=epochs, patience=patience, progress=False)
    result = train_epochs(
        net,
        optimizer,
        torch.nn.CrossEntropyLoss(),
        batches,
        val_logits,
        y[val],
        config,
        seed=7,
        checkpoint_path=checkpoint,
        on_epoch_end=on_epoch_end,
    )
    return net, result


def test_learns_real_titles_and_keeps_the_best_epoch(texts):
    net, result = run(texts, epochs=6, checkpoint=None)
    curve = [h["epoch_val_weighted_f1"] for h in result.history]
    assert len(curve) == 6
    assert result.best_val_weighted_f1 == max(curve)
    assert result.best_epoch == 1 + int(np.argmax(curve))
    assert result.best_val_weighted_f1 > 0.1  # 27 classes: chance is ~0.04
    assert result.history[-1]["epoch_train_loss"] < result.history[0]["epoch_train_loss"]


def test_resumed_training_ends_where_an_uninterrupted_one_does(texts, tmp_path):
    straight, straight_result = run(texts, epochs=5, checkpoint=None)
    checkpoint = tmp_path / "ckpt.pt"
    run(texts, epochs=2, checkpoint=checkpoint)  # "interrupted" after epoch 2
    assert checkpoint.is_file()
    resumed, resumed_result = run(texts, epochs=5, checkpoint=checkpoint)
    assert resumed_result.resumed_from_epoch == 2
    assert [h["epoch"] for h in resumed_result.history] == [1, 2, 3, 4, 5]
    for resumed_epoch, straight_epoch in zip(resumed_result.history, straight_result.history):
        assert resumed_epoch == pytest.approx(straight_epoch)
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor)


def test_early_stopping_and_a_stopping_callback(texts, tmp_path):
    _, result = run(texts, epochs=40, checkpoint=None, patience=1)
    assert len(result.history) < 40  # stopped once validation F1 stopped improving

    class Stop(Exception):
        pass

    def stop_at_two(epoch: int, f1: float) -> None:
        if epoch == 2:
            raise Stop

    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        run(texts, epochs=5, checkpoint=checkpoint, on_epoch_end=stop_at_two)
    assert not checkpoint.exists()  # a deliberate stop leaves nothing to resume


def test_class_weights_soften_inverse_frequency():
    y = pd.Series([0] * 90 + [1] * 10).to_numpy()
    w = class_weights(y, 3)
    assert w.mean().item() == pytest.approx(1.0)
    assert w[1] / w[0] == pytest.approx(3.0)  # sqrt(90 / 10)
