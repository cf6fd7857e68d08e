"""Shadow predictions: the A/B challenger answers the products the champion answered, in a
thread of its own behind a bounded queue. The client never waits for it and never sees its
answer; when the queue is full the products are dropped and counted
(``prodclass_ab_shadow_dropped_total``), so a slow challenger cannot slow the API down. Each
shadow answer is logged with arm ``shadow`` and the id of the answer the client was given.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from prodclass.serving import metrics
from prodclass.serving.json_products import ReceivedProduct
from prodclass.serving.prediction_log import LogRecord, PredictionLog
from prodclass.serving.predictor import Predictor

log = logging.getLogger(__name__)

SHADOW = "shadow"


@dataclass
class _ShadowJob:
    predictor: Predictor
    products: list[ReceivedProduct]
    answered_ids: list[str]  # the predictions the client was given, in order
    username: str | None
    top_k: int


class ShadowRunner:
    def __init__(self, prediction_log: PredictionLog, limit: int) -> None:
        self.prediction_log = prediction_log
        self.limit = limit
        self._jobs: deque[_ShadowJob] = deque()
        self._waiting = 0  # products
        self._busy = 0  # products being predicted now
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="ab-shadow", daemon=True)
        self._thread.start()

    def offer(
        self,
        predictor: Predictor,
        products: list[ReceivedProduct],
        answered_ids: list[str],
        username: str | None,
        top_k: int,
    ) -> bool:
        """Queue the products for the challenger; False (and counted) when there is no room."""
        with self._cond:
            if self._stopped or self._waiting + len(products) > self.limit:
                metrics.AB_SHADOW_DROPPED.inc(len(products))
                return False
            self._jobs.append(_ShadowJob(predictor, products, answered_ids, username, top_k))
            self._waiting += len(products)
            metrics.AB_SHADOW_DEPTH.set(self._waiting)
            self._cond.notify()
        return True

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued product has been predicted and logged (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._waiting or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(5)

    def _work(self) -> None:
        _yield_the_cpu()
        while True:
            with self._cond:
                while not self._jobs and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                job = self._jobs.popleft()
                self._waiting -= len(job.products)
                self._busy = len(job.products)
                metrics.AB_SHADOW_DEPTH.set(self._waiting)
            try:
                self._run(job)
            except Exception:  # a failing challenger must not stop the shadow thread
                log.exception("shadow prediction failed")
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()

    def _run(self, job: _ShadowJob) -> None:
        start = time.perf_counter()
        predictions = job.predictor.predict([p.input for p in job.products], top_k=job.top_k)
        seconds = time.perf_counter() - start
        records = []
        for product, prediction, answered in zip(job.products, predictions, job.answered_ids):
            metrics.AB_PREDICTIONS.labels(SHADOW, job.predictor.model_version or "").inc()
            metrics.AB_LATENCY.labels(SHADOW).observe(seconds)
            metrics.AB_CONFIDENCE.labels(SHADOW).observe(prediction.top[0].probability)
            records.append(
                LogRecord.answered(
                    str(uuid.uuid4()),
                    job.username,
                    product,
                    prediction,
                    job.predictor,
                    seconds * 1000,
                    arm=SHADOW,
                    shadow_of=answered,
                )
            )
        self.prediction_log.append(records)


def _yield_the_cpu() -> None:
    """Run this thread (and the threads it starts, e.g. torch's) at the lowest CPU priority:
    on a busy machine the champion's answers get the cores first. Linux sets the niceness of
    one thread by its native id; elsewhere the thread keeps the process's priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError) as exc:
        log.info("shadow thread keeps the process's CPU priority: %s", exc)
