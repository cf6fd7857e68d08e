"""The signed-in user's session: API URL, token and role in Streamlit's session state, and one
way to call the API that turns its errors into messages (and an expired token into sign-in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from prodclass.ui.api_client import ApiClient, ApiError

__all__ = ["ApiError", "api_url", "call", "client", "role", "sign_in", "sign_out", "signed_in"]

T = TypeVar("T")


def api_url() -> str:
    """Streamlit secrets first (Community Cloud), else the PRODCLASS_API_URL setting."""
    try:
        url = st.secrets.get("PRODCLASS_API_URL")
    except Exception:  # no secrets file at all is the normal local case
        url = None
    if url:
        return str(url)
    from prodclass.settings import get_settings

    return get_settings().api_base_url


def client() -> ApiClient:
    return ApiClient(api_url(), st.session_state.get("token"))


def signed_in() -> bool:
    return bool(st.session_state.get("token"))


def role() -> str:
    return st.session_state.get("role", "")


def sign_in(username: str, password: str) -> None:
    api = ApiClient(api_url())
    answer = api.sign_in(username, password)
    st.session_state.update(token=answer["access_token"], role=answer["role"], username=username)


def sign_out(notice: str | None = None) -> None:
    for key in ("token", "role", "username"):
        st.session_state.pop(key, None)
    if notice:
        st.session_state["notice"] = notice


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call the API; on failure show why and return None (an expired session signs out)."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        if exc.session_expired:
            sign_out(str(exc))
            st.rerun()
        st.error(str(exc))
        return None
