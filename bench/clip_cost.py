"""Benchmark: what the `multimodal-clip` family costs on a CPU, per product, for a
ViT-B/32-shaped CLIP (the shape of `openai/clip-vit-base-patch32`: 12 + 12 layers, 224-px
photos, 512-wide embeddings), built from its configuration with random weights: the cost does
not depend on the weights, and no download is needed.

Usage: .venv/bin/python bench/clip_cost.py [--batch 8] [--threads 1] [--no-timing] [--no-count]
    --batch      products per measured batch (each with a photo and 77 text tokens)
    --threads    torch intra-op threads for the timed passes
    --no-timing  count the operations only
    --no-count   time only

Counts floating-point operations with ``torch.utils.flop_counter.FlopCounterMode`` (a
multiply-add is two) for a prediction and for a training step (forward + backward of the
family's ``ClipFusionNet``) with 2 + 2 layers fine-tuned (the default), with frozen towers and
with everything fine-tuned, at 77 and 32 text tokens; then times a prediction and a default
training step on this CPU. Prints one Markdown table per measure.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPConfig, CLIPModel

from prodclass.models.multimodal_clip import ClipFusionConfig, ClipFusionNet

SETTINGS = {  # (vision layers, text layers) fine-tuned
    "training step, 2 + 2 layers fine-tuned (default)": (2, 2),
    "training step, towers frozen (0 + 0)": (0, 0),
    "training step, everything fine-tuned (12 + 12)": (12, 12),
}


def vit_b32() -> CLIPModel:
    config = CLIPConfig(
        text_config={"max_position_embeddings": 77},
        vision_config={"image_size": 224, "patch_size": 32},
        projection_dim=512,
    )
    return CLIPModel(config).eval()


def net(layers: tuple[int, int]) -> ClipFusionNet:
    config = ClipFusionConfig(
        n_classes=27,
        image_dim=512,
        text_dim=512,
        vision_trainable_layers=layers[0],
        text_trainable_layers=layers[1],
    )
    return ClipFusionNet(vit_b32(), config)


def batch(size: int, tokens: int) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(1, 49_000, (size, tokens)),
        "attention_mask": torch.ones(size, tokens, dtype=torch.long),
        "pixel_values": torch.randn(size, 3, 224, 224),
        "has_text": torch.ones(size, dtype=torch.bool),
        "has_image": torch.ones(size, dtype=torch.bool),
    }


def predict(model: ClipFusionNet, inputs: dict[str, torch.Tensor]) -> None:
    model.eval()
    with torch.inference_mode():
        model(**inputs)


def train_step(model: ClipFusionNet, inputs: dict[str, torch.Tensor]) -> None:
    model.train()
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    logits = model(**inputs)
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def gflop_per_product(step, model: ClipFusionNet, inputs: dict[str, torch.Tensor]) -> float:  # type: ignore[no-untyped-def]
    counter = FlopCounterMode(display=False)
    with counter:
        step(model, inputs)
    return counter.get_total_flops() / len(inputs["has_text"]) / 1e9


def seconds_per_product(step, model: ClipFusionNet, inputs: dict[str, torch.Tensor]) -> float:  # type: ignore[no-untyped-def]
    step(model, inputs)  # warm-up
    start = time.perf_counter()
    step(model, inputs)
    return (time.perf_counter() - start) / len(inputs["has_text"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--no-count", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    if not args.no_count:
        count(args.batch)
    if not args.no_timing:
        timing(args.batch, args.threads)


def count(size: int) -> None:
    default = net((2, 2))
    rows = {"prediction": [gflop_per_product(predict, default, batch(size, t)) for t in (77, 32)]}
    for name, layers in SETTINGS.items():
        model = net(layers)
        rows[name] = [gflop_per_product(train_step, model, batch(size, t)) for t in (77, 32)]
    print("| | 77 text tokens | 32 text tokens |\n|---|---|---|")
    for name, (long, short) in rows.items():
        print(f"| {name} | {long:.1f} GFLOP | {short:.1f} GFLOP |")


def timing(size: int, threads: int) -> None:
    torch.set_num_threads(threads)
    inputs = batch(size, 77)
    print(f"\n| seconds per product, 77 tokens, {threads} thread(s) | |\n|---|---|")
    print(f"| prediction | {seconds_per_product(predict, net((2, 2)), inputs):.2f} |")
    step = seconds_per_product(train_step, net((2, 2)), inputs)
    print(f"| training step, 2 + 2 layers fine-tuned | {step:.2f} |")


if __name__ == "__main__":
    main()
