"""Review queue: the least confident recent predictions first; confirm or correct in one click
(corrections go to the API's feedback endpoint and become training data)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from prodclass.data.taxonomy import CODES
from prodclass.ui import session
from prodclass.ui.views.common import label


def _send(prediction_id: str, code: int, verb: str) -> None:
    if session.call(session.client().feedback, prediction_id, code) is not None:
        st.session_state["review-notice"] = f"{verb}: {label(code)}"


def _chosen(prediction_id: str) -> None:
    code = st.session_state.get(f"other-{prediction_id}")
    if code is not None:
        _send(prediction_id, int(code), "corrected")


def _card(item: dict[str, Any]) -> None:
    with st.container(border=True):
        photo_col, text_col = st.columns([1, 3])
        if item["image_sha256"]:
            photo = session.call(session.client().prediction_photo, item["id"])
            if photo:
                photo_col.image(photo, width=160)
        with text_col:
            st.markdown(f"**{item['designation'] or '(no title)'}**")
            if item["description"]:
                st.caption(item["description"][:300])
            st.write(
                f"Predicted **{label(item['prdtypecode'])}** at {item['probability']:.0%} "
                f"(model {item['model_version'] or '-'}, from {item['inputs']})"
            )
            best, *others = [int(c["prdtypecode"]) for c in item["top"]][:3]
            buttons = st.columns(4)
            if buttons[0].button(f"✓ {label(best)}", key=f"ok-{item['id']}", type="primary"):
                _send(item["id"], best, "confirmed")
                st.rerun()
            for column, code in zip(buttons[1:3], others):
                if column.button(f"→ {label(code)}", key=f"alt-{item['id']}-{code}"):
                    _send(item["id"], code, "corrected")
                    st.rerun()
            buttons[3].selectbox(
                "Another category",
                options=[c for c in CODES if c not in (best, *others)],
                format_func=label,
                index=None,
                placeholder="another category...",
                key=f"other-{item['id']}",
                on_change=_chosen,
                args=(item["id"],),
                label_visibility="collapsed",
            )


def render() -> None:
    st.header("Review queue")
    st.caption("Recent predictions nobody reviewed yet, least confident first.")
    if notice := st.session_state.pop("review-notice", None):
        st.success(notice)
    limit = st.slider("How many", 5, 50, 10)
    queue = session.call(session.client().review_queue, limit)
    if queue is None:
        return
    if not queue:
        st.info("Nothing to review: every recent prediction has a verdict.")
        return
    for item in queue:
        _card(item)
