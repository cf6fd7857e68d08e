"""Background duties of a running API: follow the champion alias (a new champion is loaded
without a restart; a version loaded by hand stays until the alias moves), load the configured
model again while none serves or only the cached copy does (the registry was down at start:
``model_cache.py``), and publish the monitoring journal's latest numbers as Prometheus
gauges.

A configured model that fails to load although the registry answers (a corrupt version) is
not retried on every poll: each failure doubles the wait before the next attempt (up to
``RECOVERY_MAX_SECONDS``), is written to the journal (kind ``model``) and shown by ``/ready``.
"""

from __future__ import annotations

import logging
import threading
import time

from prodclass.monitoring import journal
from prodclass.serving import metrics
from prodclass.serving.model_slot import LoadInProgressError, LoadStatus, ModelSlot

log = logging.getLogger(__name__)

RECOVERY_MAX_SECONDS = 1800.0  # the longest wait between two attempts at a failing model


class Watcher:
    def __init__(
        self,
        slot: ModelSlot,
        model_uri: str,
        db_url: str,
        poll_seconds: float,
        refresh_seconds: float,
    ) -> None:
        self.slot = slot
        self.model_uri = model_uri
        self.db_url = db_url
        self.poll_seconds = poll_seconds
        self.refresh_seconds = refresh_seconds
        self.alias_version: str | None = None  # what the alias pointed to when last looked
        self.failures = 0  # failed recovery attempts in a row
        self.next_attempt = 0.0  # monotonic time before which recovery waits
        self._attempt: LoadStatus | None = None  # the load recovery asked for last
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self.poll_seconds > 0:
            self._spawn(self.recover, self.poll_seconds, "model-recovery")
        if self.poll_seconds > 0 and "@" in self.model_uri:
            self._spawn(self.follow_alias, self.poll_seconds, "alias-watch")
        if self.refresh_seconds > 0:
            self._spawn(self.refresh_gauges, self.refresh_seconds, "monitoring-gauges")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, duty, every: float, name: str) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    duty()
                except Exception:  # a duty failing must not take the API down
                    log.exception("%s failed", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def recover(self) -> None:
        """Load the configured model while nothing serves (its load failed: registry down,
        a broken version...) or only the cached copy does, once the registry answers; after
        a failed attempt, wait twice as long as before."""
        if self.slot.loading:
            return
        self._count_attempt()
        current = self.slot.current
        if current is not None and current.source != "cache":
            return
        if time.monotonic() < self.next_attempt:
            return  # backing off: /ready says until when
        if self.slot.registry_problem():
            return  # still down: the next poll looks again
        try:
            self._attempt = self.slot.request_load(self.model_uri, fallback=True)
        except LoadInProgressError:
            return
        log.info("model registry answers: loading %s", self.model_uri)

    def _count_attempt(self) -> None:
        """Look at how the last attempt ended: a success resets the backoff, a failure
        doubles it and is journaled."""
        attempt, self._attempt = self._attempt, None
        if attempt is None or attempt.state == "loading":
            self._attempt = attempt
            return
        if attempt.state != "failed":
            self.failures, self.next_attempt = 0, 0.0
            return
        self.failures += 1
        wait = min(self.poll_seconds * 2**self.failures, RECOVERY_MAX_SECONDS)
        self.next_attempt = time.monotonic() + wait
        summary = (
            f"Loading {attempt.uri} failed again ({self.failures} in a row): "
            f"next attempt in {wait:g} s. {attempt.error}"
        )
        log.error("%s", summary)
        try:
            journal.write(
                self.db_url,
                "model",
                summary,
                {"uri": attempt.uri, "error": attempt.error, "failures": self.failures,
                 "next_attempt_seconds": wait},
                attempt.version,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 (the database may be down too: logged above)
            log.warning("cannot journal the failed model load: %s", exc)

    def recovery_problem(self) -> str | None:
        """What ``/ready`` adds while recovery backs off, or None."""
        left = self.next_attempt - time.monotonic()
        if self.failures == 0 or left <= 0:
            return None
        return (
            f"loading {self.model_uri}: failed attempts in a row: {self.failures}, "
            f"next attempt in {left:.0f} s"
        )

    def follow_alias(self) -> None:
        from prodclass.registry.model_registry import resolve_version

        version = resolve_version(self.model_uri)
        if version is None:
            return
        if self.alias_version is None:  # first look: the load at start follows the alias
            self.alias_version = version
            return
        if version != self.alias_version:
            try:
                name = self.model_uri.removeprefix("models:/").split("@", 1)[0]
                self.slot.request_load(f"models:/{name}/{version}", version)
            except LoadInProgressError:
                return  # try again at the next poll
            log.info("%s moved to version %s: loading it", self.model_uri, version)
            self.alias_version = version

    def refresh_gauges(self) -> None:
        from prodclass.monitoring.performance import rolling_quality

        drift = journal.latest(self.db_url, "drift")
        if drift is not None:
            metrics.DRIFT_DETECTED.set(1 if drift.details.get("drift") else 0)
            metrics.DRIFT_SCORE.clear()
            for test in drift.details.get("tests", []):
                score = test["psi"] if test.get("psi") is not None else test["statistic"]
                metrics.DRIFT_SCORE.labels(test["name"], test["test"]).set(score)
        quality = rolling_quality(self.db_url)
        metrics.ROLLING_REVIEWED.set(quality["n"])
        if quality["weighted_f1"] is not None:
            metrics.ROLLING_WEIGHTED_F1.set(quality["weighted_f1"])
