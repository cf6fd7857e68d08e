"""Benchmark: how the cost of each stage grows with the number of products, and what that
means for the full catalogue (84,916 training products).

Usage: .venv/bin/python bench/cost_growth.py [--sizes 500,1000,2000,all] [--data-dir DIR]
                                             [--gpu-photos-per-second 1000] [--docs FILE]
    (or `make bench-growth`)

For each size n, a stratified subset of the labelled products (``data/split.py``) is written
as a challenge-layout folder (photos linked, not copied) and every stage runs in a fresh
process with a fresh state folder (cold caches): validate, prepare, OCR (Tesseract, cached),
photo features (EfficientNet-Lite0 frozen pooled features over trunk activations streamed
from the feature cache), fit (the champion family of params.yaml, ``train.model_family`` with
its ``families`` parameters, on all products, as training's final refit; it finds the OCR and
feature caches the earlier stages filled) and evaluate (the saved model's report on the test
split: its cost, not a score). Each
stage's wall time is measured inside its process; its peak memory is the process's maximum
resident set (``os.wait4``'s ru_maxrss, so it includes the interpreter and the libraries the
stage imports). Then per stage: the log-log slope of time and of memory against n, and the
extrapolation from the largest n to 84,916 products.

GPU projection (an estimate, not a measurement: this machine has no GPU): only the photo
stage runs a network. On a GPU it is taken as this CPU's measured decoding + resizing time per
photo (that work stays on the CPU) plus ``--gpu-photos-per-second`` for the network (an
assumption, stated in the table); every other stage is CPU work and keeps its CPU projection.
With ``--docs``, the table replaces the "Cost growth" section's table of that Markdown file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FULL_CATALOGUE = 84_916
STAGES = ("validate", "prepare", "ocr", "photo_features", "fit", "evaluate")
PHOTO_STAGES = ("ocr", "photo_features")  # their cost follows the number of photos
# Not the split's seed (42): the subset takes the lowest hashes of each class, which under
# the split's own seed are exactly its test bucket (every product would land in test).
SUBSET_SEED = 7
TABLE_START = "<!-- cost-growth table -->"
TABLE_END = "<!-- /cost-growth table -->"


# ---- one stage, in its own process ----------------------------------------------------------
def run_stage(stage: str, work: Path) -> dict[str, Any]:
    """Run ``stage`` on the subset in ``work``; inputs come from earlier stages' files."""
    from prodclass.settings import get_settings

    settings = get_settings()
    facts: dict[str, Any] = {}
    if stage == "validate":
        from prodclass.data.validate import validate

        start = time.perf_counter()
        validated = validate(work / "data", workers=settings.image_check_workers)
        seconds = time.perf_counter() - start
        (work / "validated.pkl").write_bytes(pickle.dumps(validated))
        facts["products"] = len(validated.products)
    elif stage == "prepare":
        from prodclass.data.prepare import SplitParams, prepare

        validated = pickle.loads((work / "validated.pkl").read_bytes())
        start = time.perf_counter()
        prepare(validated, work / "prepared", SplitParams())
        seconds = time.perf_counter() - start
    elif stage == "ocr":
        from prodclass.data.ocr import read_photos
        from prodclass.data.prepare import load_prepared

        paths = [p for p in load_prepared(work / "prepared")["image_path"] if p]
        start = time.perf_counter()
        words = read_photos(paths, settings.state_dir / "ocr-cache", workers=settings.ocr_workers)
        seconds = time.perf_counter() - start
        facts |= {"photos": len(paths), "with_words": sum(bool(w) for w in words)}
    elif stage == "photo_features":
        seconds, facts = _photo_features(work)
    elif stage == "fit":
        from prodclass.data.prepare import load_prepared
        from prodclass.models.registry import create

        # every product, as training's final refit does (with 500 products a split leaves
        # some class fewer than the 3 rows its calibration folds need)
        train = load_prepared(work / "prepared")
        family = champion_family()
        start = time.perf_counter()
        model = create(family, _family_params(family))
        model.fit(train)
        seconds = time.perf_counter() - start
        model.save(work / "model")
        facts |= {"train_products": len(train), "family": family}
    elif stage == "evaluate":
        from prodclass.data.prepare import load_prepared
        from prodclass.models.registry import load_model_dir
        from prodclass.training.evaluate import evaluate_model

        test = load_prepared(work / "prepared", "test")
        start = time.perf_counter()
        model = load_model_dir(work / "model")
        report, _ = evaluate_model(model, test, str(work / "model"), latency=False)
        seconds = time.perf_counter() - start
        # the model saw these products (fitted on all): a cost, not a score
        facts |= {"test_products": len(test), "modalities": len(report.get("by_modality", {}))}
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return {"seconds": seconds, **facts}


def champion_family() -> str:
    from prodclass.params import load_params
    from prodclass.settings import get_settings

    return load_params(get_settings().params_file).train.model_family


def _family_params(family: str) -> dict[str, Any]:
    from prodclass.params import load_params
    from prodclass.settings import get_settings

    return load_params(get_settings().params_file).family_params(family)


def _photo_features(work: Path) -> tuple[float, dict[str, Any]]:
    """Lite0 frozen pooled features of every photo: trunk activations into the feature cache,
    then streamed back 128 photos at a time through the frozen tail (what the photo member of
    multimodal-effnet reads). Also times decoding + resizing alone (the GPU projection's CPU
    part)."""
    import torch

    from prodclass.data.images import open_image
    from prodclass.data.prepare import load_prepared
    from prodclass.models.image_effnet import image_to_tensor
    from prodclass.models.registry import create

    torch.set_num_threads(2)
    paths = [p for p in load_prepared(work / "prepared")["image_path"] if p]
    model = create("multimodal-effnet", {"variant": "efficientnet-lite0", "views": ["orig"]})
    start = time.perf_counter()
    store = model.cache_photo_features(paths)
    features = model.frozen.pooled(store, 1)  # (N, 1, 1280)
    seconds = time.perf_counter() - start
    probe = paths[: min(len(paths), 200)]
    decode_start = time.perf_counter()
    for path in probe:
        image_to_tensor(open_image(Path(path).read_bytes()), 224)
    decode_ms = 1000 * (time.perf_counter() - decode_start) / max(len(probe), 1)
    return seconds, {
        "photos": len(paths),
        "feature_shape": list(features.shape),
        "decode_ms_per_photo": round(decode_ms, 2),
    }


# ---- the driver -------------------------------------------------------------------------------
def labelled_products(data_dir: Path):  # type: ignore[no-untyped-def]
    from prodclass.data.layout import ChallengeLayout, read_features, read_labels

    layout = ChallengeLayout(data_dir)
    rows = read_features(layout.x_train).join(read_labels(layout.y_train))
    return rows.rename(columns={"prdtypecode": "label"})


def write_subset(data_dir: Path, n: int | None, out: Path) -> int:
    """A challenge-layout folder of about ``n`` stratified products (None: all of them)."""
    from prodclass.data.layout import X_TRAIN, Y_TRAIN, ChallengeLayout, image_name
    from prodclass.data.split import stratified_subset

    source = ChallengeLayout(data_dir)
    products = labelled_products(data_dir)
    chosen = products if n is None else stratified_subset(products, n, seed=SUBSET_SEED)
    raw_x = _read_raw(source.x_train)
    raw_y = _read_raw(source.y_train)
    ids = set(chosen.index.astype(str))
    (out / X_TRAIN).parent.mkdir(parents=True, exist_ok=True)
    raw_x[raw_x.index.astype(str).isin(ids)].to_csv(out / X_TRAIN)
    raw_y[raw_y.index.astype(str).isin(ids)].to_csv(out / Y_TRAIN)
    target = ChallengeLayout(out).image_dir("train")
    target.mkdir(parents=True, exist_ok=True)
    for imageid, productid in zip(chosen["imageid"], chosen["productid"]):
        photo = source.image_path(imageid, productid)
        if photo.is_file():
            (target / image_name(imageid, productid)).symlink_to(photo.resolve())
    return len(chosen)


def _read_raw(path: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)


def measure(stage: str, work: Path) -> dict[str, Any]:
    """Run one stage in a child process; its own wall time and peak resident memory."""
    env = {**os.environ, "PRODCLASS_STATE_DIR": str(work / "state")}
    command = [sys.executable, __file__, "--stage", stage, "--work", str(work)]
    out = work / f"{stage}.json"
    with open(out.with_suffix(".log"), "wb") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = out.with_suffix(".log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"stage {stage} failed ({child.returncode}):\n{tail}")
    facts = json.loads(out.read_text())
    return facts | {"peak_mb": usage.ru_maxrss / 1024}  # Linux: kilobytes


def growth(ns: list[int], values: list[float]) -> tuple[float, float]:
    """Log-log slope over the sizes, and the value extrapolated to the full catalogue from
    the largest size along that slope."""
    slope = float(np.polyfit(np.log(ns), np.log(np.maximum(values, 1e-6)), 1)[0])
    return slope, values[-1] * (FULL_CATALOGUE / ns[-1]) ** slope


def hms(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def table(results: dict[int, dict[str, dict[str, Any]]], gpu_rate: float) -> str:
    """Markdown table: per stage, time at each n, growth, and the full-catalogue projection.

    The photo stages grow with the number of photos, not of products: the sample has a photo
    for 29 % of its products, the challenge's training set for every one of its 84,916, so
    they are extrapolated along their slope in photos to 84,916 photos."""
    ns = sorted(results)
    head = " | ".join(f"n={n:,}" for n in ns)
    lines = [
        f"| stage | {head} | time slope | {FULL_CATALOGUE:,} products, same CPU | peak MB at "
        f"n={ns[-1]:,} | memory slope | peak at {FULL_CATALOGUE:,} | one GPU (estimate) |",
        "|---" * (len(ns) + 7) + "|",
    ]
    for stage in STAGES:
        times = [results[n][stage]["seconds"] for n in ns]
        peaks = [results[n][stage]["peak_mb"] for n in ns]
        sizes = ns
        if stage in PHOTO_STAGES:
            sizes = [results[n][stage]["photos"] for n in ns]
        t_slope, t_full = growth(sizes, times)
        m_slope, m_full = growth(sizes, peaks)
        gpu = hms(t_full)
        if stage == "photo_features":
            last = results[ns[-1]][stage]
            per_photo = last["decode_ms_per_photo"] / 1000 + 1 / gpu_rate
            gpu = hms(FULL_CATALOGUE * per_photo)
        cells = " | ".join(hms(t) for t in times)
        name = f"{stage} (per photo)" if stage in PHOTO_STAGES else stage
        lines.append(
            f"| {name} | {cells} | {t_slope:.2f} | {hms(t_full)} | {peaks[-1]:,.0f} | "
            f"{m_slope:.2f} | {m_full:,.0f} MB | {gpu} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text()
    if TABLE_START not in doc:
        raise SystemExit(f"{path} has no {TABLE_START} marker (the Cost growth section)")
    before, rest = doc.split(TABLE_START, 1)
    _, after = rest.split(TABLE_END, 1)
    path.write_text(f"{before}{TABLE_START}\n{text}\n{TABLE_END}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,1000,2000,all")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--gpu-photos-per-second", type=float, default=1000.0)
    parser.add_argument("--docs", type=Path, help="Markdown file whose table to replace")
    parser.add_argument("--save", type=Path, help="write the measurements to this JSON file")
    parser.add_argument("--results", type=Path, help="render a saved JSON instead of measuring")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # child process: one stage
        facts = run_stage(args.stage, args.work)
        (args.work / f"{args.stage}.json").write_text(json.dumps(facts))
        return
    if args.results:
        saved = json.loads(args.results.read_text())
        results = {int(n): stages for n, stages in saved["results"].items()}
        about = saved["about"]
    else:
        results, about = measure_all(args)
        if args.save:
            args.save.write_text(json.dumps({"about": about, "results": results}, indent=1))
    text = render(results, about, args.gpu_photos_per_second)
    print(text)
    if args.docs:
        write_docs(args.docs, text)


def measure_all(
    args: argparse.Namespace,
) -> tuple[dict[int, dict[str, dict[str, Any]]], dict[str, Any]]:
    from prodclass.settings import get_settings

    data_dir = (args.data_dir or get_settings().data_dir).resolve()
    total = len(labelled_products(data_dir))
    sizes = [total if s == "all" else int(s) for s in args.sizes.split(",")]
    results: dict[int, dict[str, dict[str, Any]]] = {}
    load_before = os.getloadavg()[1]
    with tempfile.TemporaryDirectory(prefix="prodclass-growth-") as tmp:
        for n in sizes:
            work = Path(tmp) / f"n{n}"
            (work / "state").mkdir(parents=True)
            actual = write_subset(data_dir, None if n >= total else n, work / "data")
            results[actual] = {}
            for stage in STAGES:
                results[actual][stage] = measure(stage, work)
                facts = results[actual][stage]
                extra = {k: v for k, v in facts.items() if k not in ("seconds", "peak_mb")}
                print(
                    f"n={actual} {stage}: {facts['seconds']:.2f} s, peak "
                    f"{facts['peak_mb']:.0f} MB {json.dumps(extra)}",
                    flush=True,
                )
    about = {
        "command": f"bench/cost_growth.py --sizes {args.sizes}",
        "commit": _commit(),
        "family": champion_family(),
        "machine": machine(),
        "date": dt.date.today().isoformat(),
        "data": data_dir.name,
        "load_average": [round(load_before, 1), round(os.getloadavg()[1], 1)],
    }
    return results, about


def _commit() -> str:
    """The commit measured (``+changes`` when the work tree differs from it)."""
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=root).returncode != 0
    return f"{head}+changes" if dirty else head


def render(
    results: dict[int, dict[str, dict[str, Any]]], about: dict[str, Any], gpu_rate: float
) -> str:
    decode = results[max(results)]["photo_features"]["decode_ms_per_photo"]
    load = about["load_average"]
    notes = [
        f"Measured {about['date']} at commit {about.get('commit', '?')}: "
        f"`.venv/bin/python {about['command']}` (`make bench-growth`) on {about['machine']}, "
        f"5-minute load average {load[0]} to {load[1]} during the run; fit and evaluate: "
        f"`{about.get('family', '?')}`, the champion family of params.yaml. Stratified subsets "
        f"of {about['data']} (n = products actually drawn), a cold state folder per n.",
        "Photo stages grow with photos: the sample has a photo for 29 % of its products, the "
        "challenge's training set for all 84,916, so they are extrapolated to 84,916 photos.",
        f"One GPU: an estimate, not a measurement. Photo features = the measured CPU decoding "
        f"and resizing ({decode} ms per photo, stays on the CPU) + an assumed {gpu_rate:,.0f} "
        "photos/s for EfficientNet-Lite0 on the GPU (an assumption, not a published figure); "
        "the other stages run no network and keep their CPU figure (OCR is Tesseract, CPU "
        "only: spread it over machines, docs/deployment.md).",
    ]
    return table(results, gpu_rate) + "\n\n" + "\n".join(f"- {n}" for n in notes)


if __name__ == "__main__":
    main()
