"""The web app's only way to the system: the prediction API, over HTTP.

Every failure becomes an ``ApiError`` whose message can be shown to a user as is (the API is
down, the session expired, the photo is not an image...).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx


class ApiError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def session_expired(self) -> bool:
        return self.status == 401


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    # ---- plumbing -------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, headers=self._headers(), **kwargs)
        except httpx.TimeoutException:
            raise ApiError(
                f"the API at {self.base_url} did not answer in time; try again"
            ) from None
        except httpx.HTTPError:
            raise ApiError(f"the API at {self.base_url} is not reachable; is it running?") from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # ---- session --------------------------------------------------------------------------
    def sign_in(self, username: str, password: str) -> dict[str, Any]:
        """Log in; keeps the token on this client and returns the token answer (with role)."""
        answer = self._json("POST", "/token", data={"username": username, "password": password})
        self.token = answer["access_token"]
        return answer

    # ---- predictions ------------------------------------------------------------------------
    def sign_out(self) -> None:
        """Revoke this client's token on the API (it stops working everywhere)."""
        self._request("POST", "/token/revoke")

    def predict(
        self,
        designation: str,
        description: str = "",
        photo: bytes | None = None,
        photo_name: str = "photo.jpg",
        top_k: int = 5,
    ) -> dict[str, Any]:
        files = {"image": (photo_name, photo, "application/octet-stream")} if photo else None
        data = {"designation": designation, "description": description, "top_k": str(top_k)}
        return self._json("POST", "/predict", data=data, files=files)

    def predict_zip(self, archive: bytes, top_k: int = 5) -> Iterator[dict[str, Any]]:
        """Stream the answers to a challenge-layout zip, one dict per CSV row, in order."""
        try:
            with self._http.stream(
                "POST",
                "/predict/batch/zip",
                headers=self._headers(),
                files={"archive": ("batch.zip", archive, "application/zip")},
                data={"top_k": str(top_k)},
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError:
            raise ApiError(f"the API at {self.base_url} is not reachable; is it running?") from None

    def review_queue(self, limit: int = 20, hours: float = 24 * 7) -> list[dict[str, Any]]:
        return self._json("GET", "/predictions", params={"limit": limit, "hours": hours})

    def prediction_photo(self, prediction_id: str) -> bytes | None:
        try:
            return self._request("GET", f"/predictions/{prediction_id}/image").content
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def feedback(self, prediction_id: str, prdtypecode: int, comment: str = "") -> dict[str, Any]:
        body = {"prdtypecode": prdtypecode, "comment": comment}
        return self._json("POST", f"/feedback/{prediction_id}", json=body)

    # ---- catalogue ----------------------------------------------------------------------------
    def search_photos(self, text: str, k: int = 12) -> dict[str, Any]:
        """Catalogue products whose photos are nearest to a phrase (the answer of
        ``GET /products/similar``); a model without a shared text-photo space says why (409)."""
        params = {"text": text, "modality": "image", "k": k}
        return self._json("GET", "/products/similar", params=params)

    def catalogue_photo(self, row_id: str) -> bytes | None:
        """A catalogue product's photo, None when it has none to show."""
        try:
            return self._request("GET", f"/products/{quote(row_id, safe='')}/image").content
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # ---- models -------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        return self._json("GET", "/models")

    def current_model(self) -> dict[str, Any]:
        return self._json("GET", "/models/current")

    def model_report(self, version: str) -> dict[str, Any]:
        return self._json("GET", f"/models/{version}/report")

    def model_evidence(self, version: str) -> dict[str, Any]:
        return self._json("GET", f"/models/{version}/evidence")

    def confusion_matrix(self, version: str) -> bytes:
        return self._request("GET", f"/models/{version}/confusion-matrix").content

    def promote(self, version: str) -> dict[str, Any]:
        return self._json("POST", f"/models/{version}/promote")

    def rollback(self) -> dict[str, Any]:
        return self._json("POST", "/models/rollback")

    def start_retraining(self) -> dict[str, Any]:
        return self._json("POST", "/training/runs")

    def latest_retraining(self) -> dict[str, Any] | None:
        try:
            return self._json("GET", "/training/runs/latest")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # ---- monitoring ---------------------------------------------------------------------------
    def journal(self, kind: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"kind": kind} if kind else {})
        return self._json("GET", "/monitoring/journal", params=params)

    def alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent alerts Alertmanager sent, firing first."""
        return self._json("GET", "/monitoring/alerts", params={"limit": limit})

    def ab_test(self) -> dict[str, Any]:
        """The live A/B test (or null) and its per-arm numbers (``GET /models/ab``)."""
        return self._json("GET", "/models/ab")

    def monitoring(self, hours: float = 24, bucket_minutes: int = 60) -> dict[str, Any]:
        params = {"hours": hours, "bucket_minutes": bucket_minutes}
        return self._json("GET", "/monitoring/summary", params=params)


def _error(response: httpx.Response) -> ApiError:
    """The API's reason, phrased for a person."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}]
        detail = "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail
        )
    code = response.status_code
    if code == 401:
        if "expired" in str(detail):
            return ApiError("your session expired; please sign in again", code)
        return ApiError(f"not signed in: {detail}", code)
    if code == 403:
        return ApiError(f"your role may not do this ({detail})", code)
    if code in (429, 503):
        wait = response.headers.get("Retry-After")
        return ApiError(
            f"the API is busy: {detail}" + (f" (retry in {wait} s)" if wait else ""), code
        )
    return ApiError(str(detail), code)
