"""Pieces several pages show: category labels and a prediction's answer."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from prodclass.data.taxonomy import category, is_known


def label(code: int) -> str:
    """ "2583 · Piscine et accessoires" (the code alone if unknown)."""
    return f"{code} · {category(int(code)).name_fr}" if is_known(int(code)) else str(code)


def show_prediction(answer: dict[str, Any]) -> None:
    best = answer["category"]
    st.subheader(f"{best['prdtypecode']} · {best['name_fr']}")
    st.caption(f"{best['name_en']} — probability {best['probability']:.1%}")
    top = pd.DataFrame(
        {
            "category": [f"{c['prdtypecode']} · {c['name_fr']}" for c in answer["top"]],
            "probability": [c["probability"] for c in answer["top"]],
        }
    )
    st.bar_chart(top, x="category", y="probability", horizontal=True, sort="-probability")
    model = answer["model"]
    st.caption(
        f"Answered by model {model['name']} version {model['version'] or '-'} "
        f"({model['family']}) from {answer['inputs']}; prediction {answer['prediction_id']}"
    )
