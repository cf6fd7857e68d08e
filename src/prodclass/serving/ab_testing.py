"""Live A/B tests of the champion against a challenger version.

The running test lives in the database (``ab_tests``) so every API replica applies the same
one; each replica reads it again after ``cache_seconds``. In ``split`` mode a product goes to
the challenger when a stable hash of its identifier (``product_id``, else
``product_identifier``, else its text and photo) falls below the challenger's share: one
product always gets one arm, on every replica, and raising the share only moves products from
the champion to the challenger. In ``shadow`` mode the champion answers every product and the
challenger predicts it too, off the request path (``shadow.py``), its answer only logged.

Every logged prediction carries its arm: ``champion``, ``challenger``, ``shadow``, or
``requested`` (a version a reviewer or admin asked for by name, outside any test).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import select

from prodclass.db.session import session_scope
from prodclass.db.tables import AbTest, utcnow
from prodclass.serving.json_products import ReceivedProduct
from prodclass.serving.predictor import Predictor
from prodclass.serving.shadow import SHADOW, ShadowRunner
from prodclass.serving.version_slots import VersionLoadError, VersionSlots

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, REQUESTED = "champion", "challenger", "requested"
SPLIT = "split"
MODES = (SPLIT, SHADOW)
MAX_SHARE = 0.5  # the champion keeps at least half of the products


@dataclass(frozen=True)
class AbTestConfig:
    id: int
    challenger_version: str
    champion_version: str | None
    mode: str  # split | shadow
    challenger_share: float  # of the products (split); 0 in shadow mode
    started_at: datetime
    started_by: str
    updated_at: datetime
    updated_by: str

    @classmethod
    def of(cls, row: AbTest) -> AbTestConfig:
        fields = cls.__dataclass_fields__
        return cls(**{name: getattr(row, name) for name in fields})

    def to_dict(self) -> dict:
        return asdict(self)


# ---- the shared configuration -----------------------------------------------------------------
def running_test(db_url: str) -> AbTestConfig | None:
    with session_scope(db_url) as session:
        row = session.scalar(_running())
        return AbTestConfig.of(row) if row is not None else None


def set_test(
    db_url: str,
    challenger_version: str,
    mode: str,
    share: float,
    champion_version: str | None,
    who: str,
) -> tuple[AbTestConfig, AbTestConfig | None]:
    """Start a test, or change the running one (another challenger version starts a new test:
    its numbers are not mixed with the old one's); return (now, before)."""
    if mode not in MODES:
        raise ValueError(f"unknown A/B mode {mode!r}; modes: {', '.join(MODES)}")
    if not 0.0 <= share <= MAX_SHARE:
        raise ValueError(f"the challenger's share must be between 0 and {MAX_SHARE:.0%}")
    now = utcnow()
    with session_scope(db_url) as session:
        row = session.scalar(_running().with_for_update())
        before = AbTestConfig.of(row) if row is not None else None
        if row is not None and row.challenger_version != challenger_version:
            row.stopped_at, row.stopped_by, row = now, who, None
        if row is None:
            row = AbTest(
                challenger_version=challenger_version,
                champion_version=champion_version,
                started_at=now,
                started_by=who,
            )
            session.add(row)
        row.mode, row.challenger_share = mode, share
        row.updated_at, row.updated_by = now, who
        session.flush()
        return AbTestConfig.of(row), before


def stop_test(db_url: str, who: str) -> AbTestConfig | None:
    """Stop the running test (all traffic back to the champion); the test stopped, or None."""
    with session_scope(db_url) as session:
        row = session.scalar(_running().with_for_update())
        if row is None:
            return None
        row.stopped_at, row.stopped_by = utcnow(), who
        return AbTestConfig.of(row)


def _running():
    return select(AbTest).where(AbTest.stopped_at.is_(None)).order_by(AbTest.id.desc()).limit(1)


# ---- which arm a product gets -----------------------------------------------------------------
def product_key(product: ReceivedProduct) -> str:
    """What identifies a product across requests: its id as the client gives it, else its
    content (text and photo), so a product sent again without an id still gets one arm."""
    given = product.input.product_id or product.product_identifier
    if given:
        return f"id:{given}"
    content = hashlib.sha256()
    for part in (product.input.designation, product.input.description):
        content.update(part.encode("utf-8") + b"\0")
    content.update(product.input.image or b"")
    return f"content:{content.hexdigest()}"


def hash_position(key: str) -> float:
    """A stable number in [0, 1) for ``key``, the same in every process (unlike ``hash``)."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:15], 16) / 16**15


def split_arm(key: str, share: float) -> str:
    return CHALLENGER if hash_position(key) < share else CHAMPION


# ---- what the API applies -------------------------------------------------------------------
@dataclass
class Plan:
    """How one page of products is answered: an arm per product, the challenger's predictor
    for the challenger arm, and whether the challenger shadows the champion's answers."""

    test: AbTestConfig | None
    arms: list[str]
    challenger: Predictor | None

    @property
    def shadowed(self) -> bool:
        return self.test is not None and self.test.mode == SHADOW and self.challenger is not None


class AbRouter:
    """The running test as this replica knows it, the challenger kept loaded in ``versions``,
    and the shadow runner. A thread reads the test again every ``cache_seconds`` (0: at every
    request), so no prediction waits on the database, even while it is down (the last test
    read stays in force)."""

    def __init__(
        self, db_url: str, cache_seconds: float, versions: VersionSlots, shadow: ShadowRunner
    ) -> None:
        self.db_url = db_url
        self.cache_seconds = cache_seconds
        self.versions = versions
        self.shadow = shadow
        self._test: AbTestConfig | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.refresh()
        if self.cache_seconds > 0:
            self._thread = threading.Thread(target=self._follow, name="ab-test", daemon=True)
            self._thread.start()

    def test(self) -> AbTestConfig | None:
        """The running test, read at most ``cache_seconds`` ago."""
        if self.cache_seconds <= 0:
            self.refresh()
        return self._test

    def refresh(self) -> None:
        """Read the running test now (this replica just changed it, or its turn came)."""
        try:
            self._test = running_test(self.db_url)
        except Exception as exc:  # noqa: BLE001 (database down: keep what we know)
            log.warning("cannot read the A/B test, keeping the last known: %s", exc)
            return
        self.versions.pin(self._test.challenger_version if self._test else None)
        if self._test is not None:  # load it now, not at the first product it should answer
            self.challenger(self._test)

    def _follow(self) -> None:
        while not self._stop.wait(self.cache_seconds):
            self.refresh()

    def challenger(self, test: AbTestConfig) -> Predictor | None:
        """The challenger's predictor, or None while it loads or when it cannot be served
        (the champion then answers, and the record says so)."""
        try:
            return self.versions.get(test.challenger_version, wait=False)
        except VersionLoadError as exc:
            log.warning("A/B challenger unavailable, the champion answers: %s", exc)
            return None

    def plan(self, products: list[ReceivedProduct]) -> Plan:
        test = self.test()
        challenger = self.challenger(test) if test is not None else None
        arms = [CHAMPION] * len(products)
        if test is not None and test.mode == SPLIT and challenger is not None:
            arms = [split_arm(product_key(p), test.challenger_share) for p in products]
        return Plan(test, arms, challenger)

    def stop(self) -> None:
        """Stop following the database."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.stop()
        self.shadow.stop()
        self.versions.close()
