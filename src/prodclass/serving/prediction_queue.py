"""Prediction workers behind a bounded queue, with optional dynamic micro-batching.

``workers`` threads take jobs (one request's products) from one queue. With
``max_batch_size`` > 1 a worker groups waiting jobs into one model call, waiting at most
``max_wait_ms`` for more (worth it on a GPU or for heavy models; on a small CPU one product
per call is fastest). When ``limit`` products already wait, new requests are refused at once
with ``OverloadedError`` (the API answers 503 + Retry-After): the queue bounds latency, never a
latency guess.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from prodclass.models.base import NoEmbeddingError
from prodclass.serving import metrics
from prodclass.serving.model_slot import ModelSlot
from prodclass.serving.predictor import InvalidProductError, Prediction, Predictor, ProductInput

log = logging.getLogger(__name__)


class OverloadedError(RuntimeError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the prediction queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class NoModelError(RuntimeError):
    """No model is loaded yet (or every load failed)."""


@dataclass
class Answer:
    predictions: list[Prediction]
    predictor: Predictor
    seconds: float  # the model call that answered this job (shared by a micro-batch)
    batch_size: int  # products in that call


@dataclass
class _Job:
    products: list[ProductInput]
    top_k: int
    embed: bool = False  # the answer carries the products' vectors
    predictor: Predictor | None = None  # a given version (A/B challenger...); None: the slot's
    future: Future[Answer] = field(default_factory=Future)


class PredictionQueue:
    def __init__(
        self,
        slot: ModelSlot,
        workers: int = 2,
        max_batch_size: int = 1,
        max_wait_ms: float = 5.0,
        limit: int = 64,
    ) -> None:
        self.slot = slot
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.limit = limit
        self._jobs: deque[_Job] = deque()
        self._waiting = 0  # products in the queue
        self._cond = threading.Condition()
        self._stopped = False
        self._mean_seconds = 0.05  # running mean of one product's model time, for Retry-After
        self._threads = [
            threading.Thread(target=self._work, name=f"predict-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        products: list[ProductInput],
        top_k: int,
        wait_seconds: float = 0.0,
        embed: bool = False,
        predictor: Predictor | None = None,
    ) -> Future[Answer]:
        """Queue one request's products (``embed``: with their vectors) for ``predictor``, by
        default the slot's serving one. Refused with OverloadedError when the queue is full
        (after waiting up to ``wait_seconds`` for room: batch pages wait, single requests not)."""
        if predictor is None and self.slot.current is None:
            raise NoModelError("no model is loaded yet")
        job = _Job(list(products), top_k, embed, predictor)
        deadline = time.monotonic() + wait_seconds
        with self._cond:
            while self._waiting > 0 and self._waiting + len(job.products) > self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    metrics.OVERLOAD_REJECTIONS.inc()
                    raise OverloadedError(self.retry_after())
                self._cond.wait(remaining)
            self._jobs.append(job)
            self._waiting += len(job.products)
            metrics.QUEUE_DEPTH.set(self._waiting)
            self._cond.notify_all()
        return job.future

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1)."""
        workers = max(1, len(self._threads))
        return max(1, round(self._waiting * self._mean_seconds / workers + 0.5))

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(5)

    # ---- workers -------------------------------------------------------------------------
    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            jobs = [self._jobs.popleft()]
            size = len(jobs[0].products)
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch_size:
                if self._jobs:
                    following = self._jobs[0]
                    if (
                        size + len(following.products) > self.max_batch_size
                        or following.predictor is not jobs[0].predictor  # one model per call
                    ):
                        break
                    jobs.append(self._jobs.popleft())
                    size += len(jobs[-1].products)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._waiting -= size
            metrics.QUEUE_DEPTH.set(self._waiting)
            self._cond.notify_all()  # room for blocked submitters
            return jobs

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            # one predictor for the whole call, even mid-swap
            predictor = jobs[0].predictor or self.slot.current
            if predictor is None:
                for job in jobs:
                    job.future.set_exception(NoModelError("no model is loaded"))
                continue
            try:
                self._run(predictor, jobs)
            # one bad job (or one asking vectors of a family without any) must not fail the others
            except (InvalidProductError, NoEmbeddingError):
                for job in jobs:
                    self._run_alone(predictor, job)
            except Exception as exc:
                log.exception("prediction failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _run(self, predictor: Predictor, jobs: list[_Job]) -> None:
        products = [p for job in jobs for p in job.products]
        top_k = max(job.top_k for job in jobs)
        embed = any(job.embed for job in jobs)
        start = time.perf_counter()
        predictions = predictor.predict(products, top_k=top_k, embed=embed)
        seconds = time.perf_counter() - start
        metrics.PREDICTION_LATENCY.observe(seconds)
        metrics.BATCH_SIZE.observe(len(products))
        self._mean_seconds = 0.9 * self._mean_seconds + 0.1 * seconds / max(1, len(products))
        start_index = 0
        for job in jobs:
            mine = predictions[start_index : start_index + len(job.products)]
            start_index += len(job.products)
            if embed and not job.embed:  # another job of the micro-batch asked for them
                mine = [replace(p, embeddings=None) for p in mine]
            for prediction in mine:
                metrics.PREDICTED_CLASS.labels(str(prediction.prdtypecode)).inc()
                del prediction.top[job.top_k :]
            job.future.set_result(Answer(mine, predictor, seconds, len(products)))

    def _run_alone(self, predictor: Predictor, job: _Job) -> None:
        try:
            self._run(predictor, [job])
        except Exception as exc:
            job.future.set_exception(exc)
