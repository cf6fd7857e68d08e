"""Search the catalogue: a phrase in, the labelled products whose photos match it best, each
with its title, category and score. Needs a serving model that puts texts and photos in one
space; with any other the API's reason is shown."""

from __future__ import annotations

from typing import Any

import streamlit as st

from prodclass.ui import session
from prodclass.ui.views.common import label

COLUMNS = 4


def _card(item: dict[str, Any]) -> None:
    with st.container(border=True):
        photo = session.call(session.client().catalogue_photo, item["row_id"])
        if photo:
            st.image(photo, width=220)
        st.markdown(f"**{item['designation'] or '(no title)'}**")
        st.caption(f"{label(item['prdtypecode'])} · score {item['score']:.3f}")


def render() -> None:
    st.header("Search the catalogue")
    st.caption("Describe a product in a few words: the catalogue photos that match it come first.")
    text = st.text_input("What are you looking for?", key="search-text")
    k = st.slider("How many", 4, 48, 12, step=4, key="search-k")
    if not st.button("Search", type="primary"):
        return
    if not text.strip():
        st.warning("Type a few words to search by.")
        return
    with st.spinner("Searching..."):
        answer = session.call(session.client().search_photos, text, k)
    if answer is None:
        return
    neighbours = answer["neighbours"]
    if not neighbours:
        st.info("No catalogue product has a photo to compare with.")
        return
    for start in range(0, len(neighbours), COLUMNS):
        for column, item in zip(st.columns(COLUMNS), neighbours[start : start + COLUMNS]):
            with column:
                _card(item)
    model = answer["model"]
    st.caption(
        f"Scores are cosines in the space of model {model['name']} version "
        f"{model['version'] or '-'} ({model['family']})."
    )
