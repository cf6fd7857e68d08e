"""Retraining started from the API: the configured command (default `prodclass pipeline run`)
in a child process, one at a time, its output kept under ``state_dir/retraining/``."""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class RetrainingBusyError(RuntimeError):
    """A retraining run is already going."""


@dataclass
class RetrainingRun:
    id: str
    command: str
    started: float
    log_file: str
    state: str = "running"  # running | succeeded | failed
    finished: float | None = None
    returncode: int | None = None

    def to_dict(self, tail_lines: int = 40) -> dict[str, Any]:
        out = asdict(self)
        path = Path(self.log_file)
        text = path.read_text(errors="replace") if path.is_file() else ""
        out["log_tail"] = "\n".join(text.splitlines()[-tail_lines:])
        return out


class Retrainer:
    def __init__(self, command: str, folder: Path, cwd: Path | None = None) -> None:
        self.command = command
        self.folder = folder
        self.cwd = cwd
        self.latest: RetrainingRun | None = None
        self._lock = threading.Lock()

    def start(self) -> RetrainingRun:
        with self._lock:
            if self.latest is not None and self.latest.state == "running":
                raise RetrainingBusyError(f"retraining run {self.latest.id} is still running")
            self.folder.mkdir(parents=True, exist_ok=True)
            run_id = uuid.uuid4().hex[:12]
            log_file = self.folder / f"{run_id}.log"
            run = RetrainingRun(run_id, self.command, time.time(), str(log_file))
            with log_file.open("w") as log:
                process = subprocess.Popen(
                    shlex.split(self.command),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                )
            self.latest = run
            threading.Thread(target=self._watch, args=(run, process), daemon=True).start()
            return run

    @staticmethod
    def _watch(run: RetrainingRun, process: subprocess.Popen) -> None:
        run.returncode = process.wait()
        run.finished = time.time()
        run.state = "succeeded" if run.returncode == 0 else "failed"
