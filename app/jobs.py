"""Long background jobs of the workbench (demo build, ingest, judge runs, training…) with progress for the status
bar.

A job is a plain function that takes a `progress(done, total)` callback (the domain's convention, see
docs/ARCHITECTURE.md) and optionally a `cancel` threading.Event; it runs in its own daemon thread, and its progress,
result and error arrive on the GUI thread as signals. `JobManager.changed` fires whenever the set of running jobs
or their progress changes, which is all the status bar needs.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Signal

from store.errors import UserError
from widgets.workers import in_gui

log = logging.getLogger("maskbench.jobs")


@dataclass
class Job:
    id: int
    name: str
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    error: str | None = None
    result: Any = None
    thread: threading.Thread | None = None

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    def wait(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.finished


class JobManager(QObject):
    changed = Signal()
    jobFinished = Signal(object)  # Job
    jobFailed = Signal(object)  # Job

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._last_emit = 0.0

    def submit(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        **kwargs: Any,
    ) -> Job:
        """Run fn(*args, **kwargs) in a thread; `progress=` and `cancel=` are passed when fn accepts them."""
        job = Job(next(self._ids), name)
        params = _params(fn)

        def progress(done: int, total: int) -> None:
            job.done, job.total = int(done), int(total)
            now = time.monotonic()
            if now - self._last_emit > 0.05 or done >= total:  # at most ~20 updates a second reach the GUI
                self._last_emit = now
                in_gui(lambda: self._progress(job, on_progress), self)

        if "progress" in params and "progress" not in kwargs:
            kwargs["progress"] = progress
        if "cancel" in params and "cancel" not in kwargs:
            kwargs["cancel"] = job.cancel

        def run() -> None:
            try:
                job.result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported in the GUI
                log.exception("job %r failed", name)
                job.error = str(exc) if isinstance(exc, UserError) else f"{exc.__class__.__name__}: {exc}"
            job.finished = True
            in_gui(lambda: self._finish(job, on_result, on_error), self)

        self.jobs[job.id] = job
        job.thread = threading.Thread(target=run, name=f"job-{job.id}", daemon=True)
        job.thread.start()
        self.changed.emit()
        return job

    def _progress(self, job: Job, cb: Callable[[int, int], None] | None) -> None:
        if cb is not None:
            cb(job.done, job.total)
        self.changed.emit()

    def _finish(self, job: Job, on_result: Callable[[Any], None] | None,
                on_error: Callable[[str], None] | None) -> None:
        self.jobs.pop(job.id, None)
        if job.error is None:
            if on_result is not None:
                on_result(job.result)
            self.jobFinished.emit(job)
        else:
            if on_error is not None:
                on_error(job.error)
            self.jobFailed.emit(job)
        self.changed.emit()

    def running(self) -> list[Job]:
        return list(self.jobs.values())

    def cancel_all(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()

    def summary(self) -> tuple[str, int, int]:
        """(text, done, total) for one progress bar over every running job."""
        jobs = self.running()
        if not jobs:
            return "", 0, 0
        if len(jobs) == 1:
            j = jobs[0]
            text = f"{j.name} {j.done}/{j.total}" if j.total else j.name
            return text, j.done, j.total
        done = sum(j.done for j in jobs if j.total)
        total = sum(j.total for j in jobs if j.total)
        return f"{len(jobs)} jobs: " + ", ".join(j.name for j in jobs), done, total


def _params(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()
