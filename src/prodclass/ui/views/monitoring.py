"""Monitoring: prediction volume and latency over time, predicted class mix vs training."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from prodclass.ui import session
from prodclass.ui.views.common import label

WINDOWS = {"last hour": (1, 5), "last 24 hours": (24, 60), "last 7 days": (24 * 7, 360)}


def render() -> None:
    st.header("Monitoring")
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
