"""Monitoring: drift, the alerts Prometheus raised, prediction volume and latency over time,
predicted class mix vs training."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from prodclass.ui import session
from prodclass.ui.views.common import label

WINDOWS = {"last hour": (1, 5), "last 24 hours": (24, 60), "last 7 days": (24 * 7, 360)}


def _drift_status() -> None:
    """The latest drift check and the journal (drift, quality, retraining decisions)."""
    entries = session.call(session.client().journal)
    if entries is None:
        return
    drift = next((e for e in entries if e["kind"] == "drift"), None)
    if drift is None and entries:  # alerts may have pushed it out of the latest entries
        drift = next(iter(session.call(session.client().journal, "drift", 1) or []), None)
    if drift is None:
        st.info("No drift check yet (`prodclass monitor drift`, or the nightly Dagster schedule).")
    elif drift["details"].get("drift"):
        st.error(f"Drift: {drift['summary']} ({drift['created_at'][:16]})")
    else:
        st.success(f"No drift: {drift['summary']} ({drift['created_at'][:16]})")
    if entries:
        with st.expander("Monitoring journal"):
            journal = pd.DataFrame(entries)[["created_at", "kind", "model_version", "summary"]]
            st.dataframe(journal, hide_index=True, use_container_width=True)


def _alerts() -> None:
    """Alerts Alertmanager sent to the API's journal: those firing first, then resolved."""
    alerts = session.call(session.client().alerts)
    if alerts is None:
        return
    st.subheader("Alerts")
    if not alerts:
        st.caption(
            "No alert received (Prometheus evaluates the rules, Alertmanager sends the ones "
            "that fire to the API: docs/monitoring.md)."
        )
        return
    firing = [a for a in alerts if a["status"] == "firing"]
    if firing:
        names = ", ".join(sorted({a["name"] for a in firing}))
        st.error(f"{len(firing)} alert(s) firing: {names}")
    else:
        st.success("No alert firing.")
    table = pd.DataFrame(alerts)[["status", "severity", "name", "summary", "starts_at", "ends_at"]]
    st.dataframe(table, hide_index=True, use_container_width=True)


def _ab_test() -> None:
    """The live A/B test: per-arm numbers and the challenger's F1 difference (what
    `prodclass monitor ab` prints). Promoting from them is an admin's decision."""
    ab = session.call(session.client().ab_test)
    if ab is None:
        return
    test = ab["test"]
    if test is None and not any(arm["arm"] != "champion" for arm in ab["arms"]):
        return  # no test now, none in the last days: nothing to compare
    st.subheader("A/B test")
    if test is None:
        st.caption(f"No A/B test is running; numbers since {ab['since'][:16]}.")
    elif test["mode"] == "split":
        st.caption(
            f"Version {test['challenger_version']} answers {test['challenger_percent']:g} % of "
            f"the products, champion {test['champion_version']} the rest (since "
            f"{test['started_at'][:16]}, by {test['started_by']})."
        )
    else:
        st.caption(
            f"Version {test['challenger_version']} shadows champion {test['champion_version']} "
            f"(since {test['started_at'][:16]}, by {test['started_by']})."
        )
    if ab["arms"]:
        arms = pd.DataFrame(ab["arms"])
        arms["versions"] = arms["versions"].map(", ".join)
        st.dataframe(arms, hide_index=True, use_container_width=True)
    for d in ab["differences"]:
        if d["difference"] is None:
            st.info(f"{d['arm']} vs champion: {d['problem']}")
        else:
            kind = "paired" if d["paired"] else "unpaired"
            st.write(
                f"{d['arm']} minus champion, weighted F1: **{d['difference']:+.4f}** "
                f"(95 % {kind} bootstrap interval [{d['low']:+.4f}, {d['high']:+.4f}])"
            )


def render() -> None:
    st.header("Monitoring")
    _drift_status()
    _alerts()
    _ab_test()
    window = st.radio("Window", list(WINDOWS), index=1, horizontal=True)
    hours, bucket = WINDOWS[window]
    summary = session.call(session.client().monitoring, hours, bucket)
    if summary is None:
        return
    total = summary["predictions"]
    columns = st.columns(1 + len(summary["by_inputs"]))
    columns[0].metric("Predictions", total)
    for column, (inputs, n) in zip(columns[1:], sorted(summary["by_inputs"].items())):
        column.metric(f"from {inputs}", n)
    if not total:
        st.info("No prediction in this window.")
        return
    timeline = pd.DataFrame(summary["timeline"]).set_index("start")
    st.subheader("Volume")
    st.bar_chart(timeline[["predictions"]])
    st.subheader("Latency (ms)")
    st.bar_chart(timeline[["latency_ms_mean", "latency_ms_p95"]], stack=False)
    st.subheader("Predicted categories vs training data")
    classes = pd.DataFrame(summary["classes"])
    classes["category"] = classes["prdtypecode"].map(label)
    st.bar_chart(
        classes.set_index("category")[["predicted", "training"]],
        horizontal=True,
        height=620,
        stack=False,
    )
    st.caption(f"Training shares from: {summary['training_data']}")
