"""Benchmark: the ablation table. Each component of the late-fusion family, and the baselines,
priced by cross-validation on the labelled sample: weighted F1 per subset with its 95 %
interval, the paired difference to the late-fusion baseline on the products the component
serves, training minutes, and the cost per product on this machine with cold caches.

Usage: .venv/bin/python bench/ablation.py [--row NAME ...] [--heavy] [--folds K] [--seed S]
                                          [--data-dir DIR] [--out FILE]
    --row       only this row (repeat: these rows, in this order; names as in the table;
                default: every light row)
    --heavy     also the rows that train a network (clip-style towers, multimodal-effnet's last
                block: ~10 min per fit)
    --folds     cross-validation folds (default 5); --seed the fold hash's seed (default 42)
    --data-dir  default: PRODCLASS_DATA_DIR (settings)
    --out       markdown table (default reports/ablation.md), rewritten after every row
Each row's params are the row's overrides on top of the late-fusion defaults (the plain fusion
of the two baselines; params.yaml holds the champion the table chose) or, for other families,
of their params.yaml section. The folds, scores and paired differences are
prodclass.training.cv's (the same protocol as `prodclass train`); the cost per product is
training/latency.py's, measured on a model refitted on every label: p50 ms of one product,
text only and with a new photo (empty caches).
A row that cannot run here (e.g. a weights package not installed) is reported as such.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prodclass.data.prepare import SplitParams, load_prepared, prepare
from prodclass.data.validate import validate
from prodclass.models.registry import create
from prodclass.params import load_params
from prodclass.settings import get_settings
from prodclass.training.latency import latency_by_modality

SUBSETS = ("all", "text_only", "image_only", "both")
REFERENCE = "late-fusion"
LATENCY_REPEATS = {1: 20}  # one product per call: what a new product costs


@dataclass(frozen=True)
class Row:
    name: str
    family: str
    params: dict[str, Any] = field(default_factory=dict)
    serves: str = "all"  # the subset the component is for: its paired difference is shown
    heavy: bool = False


ROWS: tuple[Row, ...] = (
    Row("tfidf-linear (text baseline)", "tfidf-linear", serves="text_only"),
    Row("photo member alone", "late-fusion", {"use_text": False}, "image_only"),
    Row(REFERENCE, "late-fusion"),
    Row("Lite1 features", "late-fusion", {"variant": "efficientnet-lite1"}, "image_only"),
    Row("Lite2 features", "late-fusion", {"variant": "efficientnet-lite2"}, "image_only"),
    Row("+ flip TTA", "late-fusion", {"tta": True}, "image_only"),
    Row("+ OCR on photo-only products", "late-fusion", {"ocr": "photo_only"}, "image_only"),
    Row("+ OCR on every photo", "late-fusion", {"ocr": "all"}, "both"),
    Row("stacked fusion", "late-fusion", {"fusion": "stacked"}, "both"),
    Row("+ title n-grams", "late-fusion", {"title_weight": 1.0}, "text_only"),
    Row("word n-grams only", "late-fusion", {"text_ngrams": "word"}, "text_only"),
    Row("+ French word vectors", "late-fusion", {"word_vectors": True}, "text_only"),
    Row("catalogue class weights", "late-fusion", {"class_weight": "catalogue"}),
    Row("no class weights", "late-fusion", {"class_weight": "none"}),
    Row("+ pseudo-labels", "late-fusion", {"pseudo_labels": True}),
    Row(
        "champion: + title n-grams + OCR on photo-only products",
        "late-fusion",
        {"title_weight": 1.0, "ocr": "photo_only"},
    ),
    Row(
        "all switches on",
        "late-fusion",
        {
            "variant": "efficientnet-lite2",
            "tta": True,
            "ocr": "photo_only",
            "fusion": "stacked",
            "word_vectors": True,
            "pseudo_labels": True,
        },
    ),
    Row("clip-style linear probe", "clip-style", {"stage2": "linear_probe"}, heavy=True),
    Row("clip-style fine-tune", "clip-style", {"stage2": "finetune"}, heavy=True),
    Row("clip-style zero-shot (category names)", "clip-style", {"stage2": "zero_shot"}, heavy=True),
    Row(
        "fine-tuned last block + modality dropout (multimodal-effnet, Lite0)",
        "multimodal-effnet",
        {"variant": "efficientnet-lite0", "trainable_blocks": 1, "modality_dropout": 0.25},
        heavy=True,
    ),
    Row(
        "fine-tuned last block, no modality dropout (multimodal-effnet, Lite0)",
        "multimodal-effnet",
        {"variant": "efficientnet-lite0", "trainable_blocks": 1, "modality_dropout": 0.0},
        heavy=True,
    ),
)


def _cell(interval: Any) -> str:
    """mean ± half-width of a cv.Interval."""
    return f"{interval.mean:.3f} ± {(interval.high - interval.low) / 2:.3f}"


def _difference(diff: Any) -> str:
    mark = " ✓" if diff.weighted_f1.low > 0 else ""
    d = diff.weighted_f1
    return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] {diff.subset}{mark}"


def _cost(row: Row, params: dict[str, Any], products: Any) -> tuple[float, str, str]:
    """Minutes of a fit on every label, and p50 ms of one text-only / new-photo product."""
    model = create(row.family, params)
    val = None
    if "epochs" in type(model.params).model_fields:  # torch families early-stop on a part
        val = products.sample(frac=0.15, random_state=0)
    start = time.perf_counter()
    model.fit(products if val is None else products.drop(val.index), val)
    minutes = (time.perf_counter() - start) / 60
    model.inference_threads = get_settings().api_torch_threads  # what the API gives a worker
    latency = latency_by_modality(model, products, LATENCY_REPEATS, max_seconds=3.0)

    def p50(group: str) -> str:
        return f"{latency[group]['batch_1']['p50_ms']:.0f}" if group in latency else "–"

    return minutes, p50("text_only"), p50("image_only")


def run_row(row: Row, params: dict[str, Any], products: Any, folds: int, seed: int, reference):
    from prodclass.training.cv import cross_validate, paired_difference, score

    result = cross_validate(products, row.family, params, folds=folds, seed=seed)
    scores = score(result)
    diff = "reference" if row.name == REFERENCE else "–"
    if reference is not None and row.name != REFERENCE:
        diff = _difference(paired_difference(result, reference, REFERENCE)[row.serves])
    cv_minutes = sum(f.fit_seconds for f in result.fold_facts) / 60 / folds
    refit_minutes, text_ms, photo_ms = _cost(row, params, products)
    cells = [_cell(scores[s].weighted_f1) if s in scores else "–" for s in SUBSETS]
    line = [row.name, *cells, diff, f"{cv_minutes:.1f} / {refit_minutes:.1f}", text_ms, photo_ms]
    return result, "| " + " | ".join(line) + " |"


def header(args: argparse.Namespace, data_dir: Path, n: int) -> list[str]:
    today = datetime.date.today().isoformat()
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return [
        f"Ablation of the late-fusion family, {today}: `make ablation` "
        f"(bench/ablation.py --folds {args.folds} --seed {args.seed}) on {n} labelled "
        f"products of {data_dir.name}; {cpu}, Python {platform.python_version()}.",
        "",
        "Weighted F1 out of fold (mean ± half the 95 % bootstrap interval); Δ: paired "
        "difference to late-fusion on the subset the row serves, ✓ when its interval is above "
        "0; minutes per fit (CV fold / refit on every label, photo caches warm); ms: p50 of "
        "one product on a model refitted on every label, cold caches, the API's threads per "
        "prediction.",
        "",
        "| row | all | text-only | photo-only | both | Δ weighted F1 vs late-fusion | "
        "train min | text ms | new photo ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", dest="rows", action="append", default=None)
    parser.add_argument("--heavy", action="store_true")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/ablation.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = get_settings()
    data_dir = Path(args.data_dir or settings.data_dir)
    by_name = {r.name: r for r in ROWS}
    if args.rows:  # in the order given: the most telling first when time is short
        if unknown := [name for name in args.rows if name not in by_name]:
            parser.error(f"unknown rows: {'; '.join(unknown)}")
        rows = [by_name[name] for name in args.rows]
    else:
        rows = [r for r in ROWS if args.heavy or not r.heavy]
    if REFERENCE not in [r.name for r in rows]:
        rows.insert(0, next(r for r in ROWS if r.name == REFERENCE))  # the differences need it
    rows.sort(key=lambda r: r.name != REFERENCE)  # the reference first
    family_params = load_params(settings.params_file).family_params
    with tempfile.TemporaryDirectory(prefix="prodclass-ablation-") as tmp:
        prepare(validate(data_dir, workers=settings.image_check_workers), Path(tmp), SplitParams())
        products = load_prepared(Path(tmp))
    lines = header(args, data_dir, len(products))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print("\n".join(lines), flush=True)
    reference = None
    for row in rows:
        # late-fusion rows start from the family's defaults, the plain fusion of the two
        # baselines: params.yaml holds the champion this table chose
        base = {} if row.family == REFERENCE else family_params(row.family)
        params = base | row.params
        try:
            result, line = run_row(row, params, products, args.folds, args.seed, reference)
        except (RuntimeError, ValueError, OSError) as exc:  # e.g. weights not installed
            line = f"| {row.name} | not run here: {str(exc).splitlines()[0][:120]} |"
            result = None
        if row.name == REFERENCE:
            reference = result
        lines.append(line)
        print(line, flush=True)
        args.out.write_text("\n".join(lines) + "\n")
    print(f"table written to {args.out}")


if __name__ == "__main__":
    main()
