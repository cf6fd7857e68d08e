"""Per-arm numbers of a live A/B test, from the prediction log and reviewers' verdicts: how
many products each arm answered, how sure and how fast it was, and its weighted F1 on the
products a reviewer verified; then the challenger's F1 minus the champion's with a 95 %
bootstrap interval (``training/cv.py``, the code behind the promotion rule).

In ``split`` mode the two arms answered different products, each resampled on its own. In
``shadow`` mode the challenger answered the very products the champion did, so the
difference is paired: a reviewer's verdict on the champion's answer is the truth for the
challenger's answer to the same request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from prodclass.db.session import session_scope
from prodclass.db.tables import Feedback, PredictionRecord
from prodclass.training.cv import paired_f1_difference, unpaired_f1_difference
from prodclass.training.metrics import classification_metrics

ARM_ORDER = ("champion", "challenger", "shadow", "requested")
MIN_REVIEWED = 2  # per arm, for an interval (few verdicts give a wide one: it says so)
MAX_ROWS = 500_000


def ab_report(db_url: str, since: datetime, resamples: int = 1000) -> dict[str, Any]:
    """Per-arm counts, mean confidence, latency p50/p95, reviewed count and weighted F1 of
    predictions logged since ``since``, and the challenger-minus-champion F1 difference."""
    with session_scope(db_url) as session:
        rows = session.execute(
            select(
                PredictionRecord.id,
                PredictionRecord.arm,
                PredictionRecord.model_version,
                PredictionRecord.prdtypecode,
                PredictionRecord.probability,
                PredictionRecord.latency_ms,
                PredictionRecord.shadow_of,
            )
            .where(PredictionRecord.created_at >= since)
            .limit(MAX_ROWS)
        ).all()
        ids = [r.shadow_of or r.id for r in rows]
        truth: dict[str, int] = {}
        for start in range(0, len(ids), 5000):  # latest verdict per prediction
            verdicts = session.execute(
                select(Feedback.prediction_id, Feedback.prdtypecode)
                .where(Feedback.prediction_id.in_(ids[start : start + 5000]))
                .order_by(Feedback.id)
            ).all()
            truth.update({pid: int(code) for pid, code in verdicts})
    by_arm: dict[str, list] = {}
    for row in rows:
        by_arm.setdefault(row.arm or "champion", []).append(row)
    arms = [_arm_numbers(arm, by_arm[arm], truth) for arm in _ordered(by_arm)]
    return {
        "since": since.isoformat(),
        "arms": arms,
        "differences": _differences(by_arm, truth, resamples),
    }


def _ordered(arms: dict[str, list]) -> list[str]:
    return sorted(arms, key=lambda a: (ARM_ORDER.index(a) if a in ARM_ORDER else 99, a))


def _truth_of(row: Any, truth: dict[str, int]) -> int | None:
    return truth.get(row.shadow_of or row.id)


def _arm_numbers(arm: str, rows: list, truth: dict[str, int]) -> dict[str, Any]:
    latencies = np.array([r.latency_ms for r in rows], dtype=float)
    reviewed = [(t, r.prdtypecode) for r in rows if (t := _truth_of(r, truth)) is not None]
    f1 = None
    if reviewed:
        y, p = zip(*reviewed)
        f1 = classification_metrics(np.array(y), np.array(p))["weighted_f1"]
    return {
        "arm": arm,
        "versions": sorted({r.model_version or "-" for r in rows}),
        "predictions": len(rows),
        "mean_confidence": round(float(np.mean([r.probability for r in rows])), 4),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 2),
        "reviewed": len(reviewed),
        "weighted_f1": f1,
    }


def _differences(by_arm: dict[str, list], truth: dict[str, int], resamples: int) -> list[dict]:
    out = []
    # split: challenger and champion answered different products
    split = {
        arm: [
            (t, r.prdtypecode)
            for r in by_arm.get(arm, [])
            if (t := _truth_of(r, truth)) is not None
        ]
        for arm in ("challenger", "champion")
    }
    if by_arm.get("challenger"):
        out.append(_difference("split", "challenger", split["challenger"], split["champion"]))
        if out[-1]["problem"] is None:
            (ya, pa), (yb, pb) = (zip(*split[a]) for a in ("challenger", "champion"))
            interval = unpaired_f1_difference(
                (np.array(ya), np.array(pa)), (np.array(yb), np.array(pb)), resamples
            )
            out[-1] |= {"difference": interval.mean, "low": interval.low, "high": interval.high}
    # shadow: the same requests, answered by both
    shadows = by_arm.get("shadow", [])
    if shadows:
        answered = {r.id: r for rows in by_arm.values() for r in rows if r.shadow_of is None}
        triples = [
            (truth[s.shadow_of], s.prdtypecode, answered[s.shadow_of].prdtypecode)
            for s in shadows
            if s.shadow_of in truth and s.shadow_of in answered
        ]
        pairs = [(t, c) for t, c, _ in triples], [(t, a) for t, _, a in triples]
        out.append(_difference("shadow", "shadow", *pairs))
        if out[-1]["problem"] is None:
            y, challenger, champion = (np.array(v) for v in zip(*triples))
            interval = paired_f1_difference(y, challenger, champion, resamples)
            out[-1] |= {"difference": interval.mean, "low": interval.low, "high": interval.high}
    return out


def _difference(mode: str, arm: str, challenger: list, champion: list) -> dict[str, Any]:
    """The frame of one comparison; ``problem`` says why it has no interval."""
    few = min(len(challenger), len(champion))
    problem = None
    if few < MIN_REVIEWED:
        problem = (
            f"too few reviewed predictions ({len(challenger)} {arm}, {len(champion)} "
            f"champion; {MIN_REVIEWED} each at least)"
        )
    return {
        "mode": mode,
        "arm": arm,
        "paired": mode == "shadow",
        "reviewed_challenger": len(challenger),
        "reviewed_champion": len(champion),
        "difference": None,
        "low": None,
        "high": None,
        "problem": problem,
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as a table for a terminal (``prodclass monitor ab``)."""
    lines = [
        f"{'arm':<11}{'versions':<10}{'predictions':>12}{'confidence':>11}{'p50 ms':>9}"
        f"{'p95 ms':>9}{'reviewed':>9}{'F1':>8}"
    ]
    for arm in report["arms"]:
        f1 = "-" if arm["weighted_f1"] is None else f"{arm['weighted_f1']:.4f}"
        lines.append(
            f"{arm['arm']:<11}{','.join(arm['versions']):<10}{arm['predictions']:>12}"
            f"{arm['mean_confidence']:>11.3f}{arm['latency_ms_p50']:>9.1f}"
            f"{arm['latency_ms_p95']:>9.1f}{arm['reviewed']:>9}{f1:>8}"
        )
    for d in report["differences"]:
        kind = "paired" if d["paired"] else "unpaired"
        head = f"{d['arm']} minus champion, weighted F1 ({d['mode']}, {kind} bootstrap)"
        if d["difference"] is None:
            lines.append(f"{head}: no interval, {d['problem']}")
        else:
            lines.append(
                f"{head}: {d['difference']:+.4f}, 95 % interval [{d['low']:+.4f}, "
                f"{d['high']:+.4f}] on {d['reviewed_challenger']} and "
                f"{d['reviewed_champion']} reviewed"
            )
    return lines
