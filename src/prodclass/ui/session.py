"""The signed-in user's session: API URL, token and role in Streamlit's session state, and one
way to call the API that turns its errors into messages (and an expired token into sign-in)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from prodclass.ui.api_client import ApiClient, ApiError

__all__ = [
    "ApiError",
    "api_url",
    "call",
    "client",
    "role",
    "service_account",
    "sign_in",
    "sign_in_automatically",
    "sign_out",
    "signed_in",
]

T = TypeVar("T")


def _secret(name: str) -> str | None:
    """One of the app's Streamlit secrets (Community Cloud keeps settings there), if set."""
    try:
        value = st.secrets.get(name)
    except Exception:  # no secrets file at all is the normal local case
        value = None
    return str(value) if value else None


def api_url() -> str:
    """Streamlit secrets first (Community Cloud), else the PRODCLASS_API_URL setting."""
    from prodclass.settings import get_settings

    return _secret("PRODCLASS_API_URL") or get_settings().api_base_url


def service_account() -> tuple[str, str] | None:
    """The account the app signs in with by itself (secrets, else settings), if one is set."""
    from prodclass.settings import get_settings

    settings = get_settings()
    username = _secret("PRODCLASS_UI_USERNAME") or settings.ui_username
    password = _secret("PRODCLASS_UI_PASSWORD") or (
        settings.ui_password.get_secret_value() if settings.ui_password else None
    )
    return (username, password) if username and password else None


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


def sign_in_automatically() -> None:
    """Sign in with the service account, unless none is set or the user signed out on purpose
    (to sign in as someone else); a refused account says why on the sign-in page."""
    account = service_account()
    if account is None or signed_in() or st.session_state.get("signed_out_by_user"):
        return
    try:
        sign_in(*account)
    except ApiError as exc:
        st.session_state["notice"] = f"Automatic sign-in as {account[0]} failed: {exc}"
        st.session_state["signed_out_by_user"] = True  # do not retry on every rerun


def sign_out(notice: str | None = None, *, by_user: bool = False) -> None:
    """Forget the session; a user signing out also revokes the token on the API."""
    if by_user and signed_in():
        # already expired, or the API is away: the token dies at its expiry anyway
        with contextlib.suppress(ApiError):
            client().sign_out()
    for key in ("token", "role", "username"):
        st.session_state.pop(key, None)
    if notice:
        st.session_state["notice"] = notice
    if by_user:
        st.session_state["signed_out_by_user"] = True


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
