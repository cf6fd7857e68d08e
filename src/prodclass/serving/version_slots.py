"""Registered versions served beside the champion: the A/B challenger and versions a request
names (``/predict``'s ``model_version``), each in a ``ModelSlot`` of its own (the same
background load and smoke test as the champion's), loaded on first use and kept for the next
requests; past ``capacity`` the least recently used one not in use by an A/B test is dropped.

A version that fails to load is remembered for ``RETRY_SECONDS``: requests in the meantime
are told why at once instead of each starting a load of their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from prodclass.serving.model_slot import ModelSlot
from prodclass.serving.predictor import Predictor

log = logging.getLogger(__name__)

RETRY_SECONDS = 60.0


class VersionLoadError(RuntimeError):
    """A version that cannot be served now; the message says why (failed load, or still
    loading after the wait: ``loading``)."""

    def __init__(self, message: str, loading: bool = False) -> None:
        super().__init__(message)
        self.loading = loading


class VersionSlots:
    def __init__(
        self,
        model_name: str,
        capacity: int,
        load_seconds: float,
        torch_threads: int = 1,
        max_image_bytes: int = 10 * 1024 * 1024,
        tracking_uri: str = "",
    ) -> None:
        self.model_name = model_name
        self.capacity = capacity
        self.load_seconds = load_seconds
        self._slot_options = {
            "torch_threads": torch_threads,
            "max_image_bytes": max_image_bytes,
            "tracking_uri": tracking_uri,
        }
        self._slots: OrderedDict[str, ModelSlot] = OrderedDict()
        self._pinned: set[str] = set()
        self._lock = threading.Lock()

    def get(self, version: str, wait: bool = True) -> Predictor | None:
        """The predictor of ``version``, loading it when needed: waits up to ``load_seconds``
        (``wait``), else None while it loads. VersionLoadError when it cannot be served."""
        slot = self._slot(version)
        if wait:
            slot.wait(self.load_seconds)
        predictor = slot.current
        if predictor is not None:
            return predictor
        status = slot.last_load
        if status is not None and status.state == "failed":
            raise VersionLoadError(f"version {version} cannot be served: {status.error}")
        if wait:
            raise VersionLoadError(
                f"version {version} is still loading after {self.load_seconds:g} s; try again",
                loading=True,
            )
        return None

    def loaded(self, version: str) -> Predictor | None:
        """The predictor of ``version`` when it is loaded already (no load started)."""
        with self._lock:
            slot = self._slots.get(version)
        return slot.current if slot is not None else None

    def pin(self, version: str | None) -> None:
        """Keep ``version`` loaded (the A/B challenger; None: no version is kept)."""
        with self._lock:
            self._pinned = {version} if version is not None else set()

    def close(self) -> None:
        with self._lock:
            slots, self._slots = list(self._slots.values()), OrderedDict()
        for slot in slots:
            slot.close()

    def _slot(self, version: str) -> ModelSlot:
        with self._lock:
            slot = self._slots.get(version)
            failed = (
                slot is not None
                and slot.last_load is not None
                and (
                    slot.last_load.state == "failed"
                    and time.time() - (slot.last_load.finished or 0) > RETRY_SECONDS
                )
            )
            if slot is None or failed:
                slot = ModelSlot(**self._slot_options, advertise=False)
                slot.request_load(f"models:/{self.model_name}/{version}", version)
                self._slots[version] = slot
                log.info("loading model version %s beside the champion", version)
            self._slots.move_to_end(version)
            self._evict(keep=version)
            return slot

    def _evict(self, keep: str) -> None:
        for version in list(self._slots):
            if len(self._slots) <= self.capacity:
                return
            if version != keep and version not in self._pinned:
                self._slots.pop(version).close()
                log.info("model version %s dropped (least recently used)", version)
