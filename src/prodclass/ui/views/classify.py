"""Classify one product: title, description, optional photo (previewed); the top-5 answer."""

from __future__ import annotations

import streamlit as st

from prodclass.data.images import ImageError, open_image
from prodclass.ui import session
from prodclass.ui.views.common import show_prediction

PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp"]


def render() -> None:
    st.header("Classify a product")
    left, right = st.columns([3, 2])
    with left:
        designation = st.text_input("Title (designation)", key="classify-designation")
        description = st.text_area("Description", key="classify-description", height=120)
    with right:
        photo = st.file_uploader("Photo (optional)", type=PHOTO_TYPES, key="classify-photo")
        if photo is not None:
            try:
                preview = open_image(photo.getvalue())
            except ImageError as exc:
                st.error(f"{photo.name} is not a usable photo: {exc}")
            else:
                st.image(preview, caption=photo.name, width=220)
    if not st.button("Classify", type="primary"):
        return
    if not (designation.strip() or description.strip() or photo is not None):
        st.warning("Give a title, a description or a photo to classify.")
        return
    with st.spinner("Classifying..."):
        answer = session.call(
            session.client().predict,
            designation,
            description,
            photo.getvalue() if photo is not None else None,
            photo.name if photo is not None else "photo.jpg",
        )
    if answer is not None:
        show_prediction(answer)
