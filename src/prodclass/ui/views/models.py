"""Models (admin): versions, their cross-validated quality and the promotion decision with its
interval and per-class changes, out-of-fold metrics and confusion matrix from MLflow, the
champion;
promote, roll back, start a retraining run."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from prodclass.ui import session
from prodclass.ui.views.common import label


def _versions_table(versions: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(versions)
    table["aliases"] = table["aliases"].map(", ".join)
    columns = ["version", "aliases", "family", "weighted_f1", "macro_f1", "accuracy"]
    return table[columns].set_index("version")


def _report(version: str) -> None:
    client = session.client()
    try:
        report = client.model_report(version)
    except session.ApiError as exc:
        st.info(f"No evaluation report for version {version}: {exc}")
        return
    a, b, c = st.columns(3)
    a.metric("Weighted F1", f"{report['weighted_f1']:.3f}")
    b.metric("Macro F1", f"{report['macro_f1']:.3f}")
    c.metric("Products scored", report["n"], help=f"predictions: {report.get('split', 'test')}")
    per_class = pd.DataFrame(
        {
            "category": [label(int(code)) for code in report["per_class"]],
            "f1": [row["f1"] for row in report["per_class"].values()],
        }
    )
    st.bar_chart(per_class, x="category", y="f1", horizontal=True, sort="-f1", height=620)
    matrix = session.call(client.confusion_matrix, version)
    if matrix:
        where = report.get("split", "test")
        st.image(matrix, caption=f"Confusion matrix of version {version} ({where} predictions)")


def _interval(x: dict) -> str:
    return f"{x['mean']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"


def _evidence(version: str) -> None:
    """The cross-validated quality and the promotion decision with its interval."""
    client = session.client()
    try:
        evidence = client.model_evidence(version)
    except session.ApiError as exc:
        st.info(f"No cross-validation record for version {version}: {exc}")
        return
    st.subheader("Cross-validated quality")
    scores = (evidence.get("cv") or {}).get("scores") or {}
    if scores:
        st.dataframe(
            pd.DataFrame(
                {
                    "products": [s["n"] for s in scores.values()],
                    "weighted F1 [95 %]": [_interval(s["weighted_f1"]) for s in scores.values()],
                    "macro F1 [95 %]": [_interval(s["macro_f1"]) for s in scores.values()],
                },
                index=list(scores),
            ),
            use_container_width=True,
        )
    decision = evidence.get("promotion")
    if not decision:
        return
    verdict = "promoted to champion" if decision["promoted"] else "kept as challenger"
    st.write(f"Registration decision: **{verdict}** — {decision['reason']}")
    if decision.get("difference") is not None:
        st.metric(
            "Weighted F1 vs the champion then (paired, out of fold)",
            f"{decision['difference']:+.3f}",
            help=f"95 % interval [{decision['difference_low']:+.3f}, "
            f"{decision['difference_high']:+.3f}] on {decision['n_compared']} products",
        )
    changes = decision.get("per_class_changes") or {}
    if changes:
        table = pd.DataFrame(
            {
                "category": [label(int(code)) for code in changes],
                "F1 change": [row["f1_change"] for row in changes.values()],
                "F1": [row["f1"] for row in changes.values()],
                "recall": [row["recall"] for row in changes.values()],
                "products": [row["support"] for row in changes.values()],
            }
        ).sort_values("F1 change")
        st.dataframe(table.set_index("category"), use_container_width=True)


FOLLOW_SECONDS = 5  # how often the page reads a queued or running retraining run again
FOLLOWED = ("queued", "running")


def _retraining() -> None:
    st.subheader("Retraining")
    client = session.client()
    if st.button("Start a retraining run"):
        run = session.call(client.start_retraining)
        if run:
            st.success(f"retraining run {run['id']} asked of Dagster: {run['state']}")
    latest = session.call(client.latest_retraining)
    if latest and latest["state"] in FOLLOWED:
        # only this part of the page is read again, until the run ends
        st.fragment(_follow, run_every=FOLLOW_SECONDS)(latest["id"])
    elif latest:
        _show_run(latest)


def _follow(run_id: str) -> None:
    latest = session.call(session.client().latest_retraining)
    if latest is None:
        return
    _show_run(latest)
    if latest["id"] != run_id or latest["state"] not in FOLLOWED:
        st.rerun()  # the whole page again: it stops following an ended run


def _show_run(run: dict) -> None:
    """A retraining run as Dagster reports it (whichever API replica started it)."""
    st.write(
        f"Latest run `{run['id']}` ({run['job']}, asked by {run['requested_by']}): "
        f"**{run['state']}** (Dagster: {run['status']})"
    )
    if run["failure"]:
        st.error(run["failure"])
    if run["log_tail"]:
        st.code(run["log_tail"], language=None)


def render() -> None:
    st.header("Models")
    client = session.client()
    versions = session.call(client.models)
    current = session.call(client.current_model)
    if versions is None or current is None:
        return
    serving = current.get("serving") or {}
    st.write(f"Serving: version **{serving.get('version', '-')}** ({serving.get('family', '-')})")
    last = current.get("last_load") or {}
    if last.get("state") == "failed":
        st.warning(f"The last load ({last['uri']}) was refused: {last['error']}")
    if not versions:
        st.info("No registered model yet: run the pipeline (`make demo`).")
        _retraining()
        return
    st.dataframe(_versions_table(versions), use_container_width=True)
    champion = next((v["version"] for v in versions if "champion" in v["aliases"]), None)
    version = st.selectbox("Version", [v["version"] for v in versions])
    promote, rollback = st.columns(2)
    if promote.button(f"Promote version {version} to champion", disabled=version == champion):
        answer = session.call(client.promote, version)
        if answer:
            st.success(f"version {answer['champion']} is champion; loading it")
    if rollback.button("Roll back to the previous champion"):
        answer = session.call(client.rollback)
        if answer:
            st.success(f"champion is version {answer['champion']} again; loading it")
    _evidence(version)
    _report(version)
    _retraining()
