"""Benchmark: `prodclass predict` over a challenge CSV, its speed and its peak memory.

Usage: .venv/bin/python bench/score_catalogue.py [--model URI] [--data-dir DIR]
                                                 [--part test|train] [--chunk-size N]
    --model       a model folder, runs:/…, or models:/… (default PRODCLASS_MODEL_URI, the
                  champion). A quick one: .venv/bin/prodclass train --model-family
                  tfidf-linear --data ../shared/data/rakuten_sample --out DIR
    --data-dir    the challenge folder (default PRODCLASS_DATA_DIR)
    --part        test (X_test_update.csv, default) or train (X_train_update.csv)
    --chunk-size  products per chunk (the command's default when not given)
Runs the real command in a child process, into a fresh file, and prints: the products scored,
the wall time of the whole command (model load included) and of its scoring alone (from the
first chunk's file to the end: what grows with the catalogue), products per second, the
extrapolation of the scoring to the 84,916 products of the full training CSV, and the child's
peak resident memory (getrusage's ru_maxrss of the child) and its resident memory as each
chunk's file appears: a trace that levels off, whatever the part's size, is bounded memory.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from prodclass.serving.catalogue_scoring import CHUNK_SIZE

FULL_CATALOGUE = 84_916  # products of the full challenge's X_train_update.csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--part", default="test", choices=("test", "train"))
    parser.add_argument("--chunk-size", type=int, default=None)
    args = parser.parse_args()
    command = [str(Path(sys.executable).with_name("prodclass")), "predict", "--part", args.part]
    command += ["--model", args.model] if args.model else []
    command += ["--data", str(args.data_dir)] if args.data_dir else []
    command += ["--chunk-size", str(args.chunk_size)] if args.chunk_size else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.csv"
        work = out.with_name(out.name + ".partial")  # where the command keeps finished chunks
        log = Path(tmp) / "stderr.log"  # a file, not a pipe: a full pipe would block the child
        start = time.perf_counter()
        with log.open("w") as err:
            child = subprocess.Popen([*command, "--out", str(out)], stderr=err)
            first = None  # when the first chunk's file appeared
            resident: list[int] = []  # the child's resident MiB as each chunk's file appears
            while child.poll() is None:
                parts = sum(1 for _ in work.glob("part-*.parquet"))
                if parts > len(resident):
                    first = first or time.perf_counter()
                    resident += [resident_mib(child.pid)] * (parts - len(resident))
                time.sleep(0.02)
        total = time.perf_counter() - start
        said = log.read_text()
        if child.returncode != 0:
            sys.exit(f"prodclass predict exited {child.returncode}:\n{said}")
        print(said.strip())
        products = len(pd.read_csv(out, usecols=["row_id"], dtype=str))
        chunk = args.chunk_size or CHUNK_SIZE
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    seen = min(chunk, products) if first else 0
    scoring = total - ((first - start) if first else 0)
    rate = (products - seen) / scoring if scoring > 0 and products > seen else float("nan")
    print(f"command: {' '.join(command)}")
    print(f"products scored: {products}")
    print(f"wall time, whole command: {total:.1f} s")
    print(f"scoring after the first chunk: {products - seen} products in {scoring:.1f} s")
    print(f"products/second: {rate:.1f}")
    print(f"extrapolated to {FULL_CATALOGUE:,} products: {FULL_CATALOGUE / rate / 60:.1f} min")
    print(f"peak resident memory of the command: {peak_mib:.0f} MiB")
    if resident:
        trace = ", ".join(f"{m}" for m in resident)
        print(f"resident MiB after each chunk ({len(resident)} chunks): {trace}")


def resident_mib(pid: int) -> int:
    """The process's resident memory now (Linux: VmRSS of /proc/PID/status), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    main()
