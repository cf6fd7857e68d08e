"""prodclass web app: `prodclass ui` (or `streamlit run src/prodclass/ui/app.py`).

What a user sees depends on the role the API gives them: clients classify (one product or a
batch) and search the catalogue's photos by words, reviewers also work the review queue and
watch monitoring, admins also manage models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

try:
    import prodclass  # noqa: F401
except ModuleNotFoundError:  # a clone run without installing (Streamlit Community Cloud)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prodclass.ui import session  # noqa: E402
from prodclass.ui.views import batch, classify, models, monitoring, review, search  # noqa: E402

PAGES_BY_ROLE = {
    "client": ("classify", "batch", "search"),
    "reviewer": ("classify", "batch", "search", "review", "monitoring"),
    "admin": ("classify", "batch", "search", "review", "monitoring", "models"),
}
PAGES = {
    "classify": st.Page(classify.render, title="Classify a product", url_path="classify"),
    "batch": st.Page(batch.render, title="Batch", url_path="batch"),
    "search": st.Page(search.render, title="Search the catalogue", url_path="search"),
    "review": st.Page(review.render, title="Review queue", url_path="review"),
    "monitoring": st.Page(monitoring.render, title="Monitoring", url_path="monitoring"),
    "models": st.Page(models.render, title="Models", url_path="models"),
}


def sign_in_page() -> None:
    st.title("prodclass")
    st.caption("Rakuten catalogue product-type classification")
    if notice := st.session_state.pop("notice", None):
        st.warning(notice)
    with st.form("sign-in"):
        username = st.text_input("User name")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        try:
            session.sign_in(username, password)
        except session.ApiError as exc:
            st.error(str(exc))
        else:
            st.rerun()
    st.caption(f"API: {session.api_url()}")


def main() -> None:
    st.set_page_config(page_title="prodclass", layout="wide")
    session.sign_in_automatically()
    if not session.signed_in():
        st.navigation([st.Page(sign_in_page, title="Sign in", url_path="sign-in")]).run()
        return
    with st.sidebar:
        st.write(f"**{st.session_state.get('username')}** ({session.role()})")
        if st.button("Sign out"):
            session.sign_out(by_user=True)
            st.rerun()
        st.caption(f"API: {session.api_url()}")
    names = PAGES_BY_ROLE.get(session.role(), ("classify",))
    st.navigation([PAGES[name] for name in names]).run()


main()
