"""Priority pools for the views' interactive loads (crops, embeddings, decodes), results on the GUI thread.

Qt's QThreadPool cannot drop a queued task that is no longer wanted (the reviewer pressed J five times: only the
last crop matters), so the views use `TaskPool`: a heap of tasks with priorities and keys, daemon threads (a
closing window never waits for a model), and callbacks delivered through one queued signal. A callback whose
owner widget is gone is skipped. Long jobs, panels' runs and child processes use TaskHub (widgets.workers.hub)
instead: the pool is for many small, prioritised, frequently superseded loads; its Future also works without Qt.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject

from widgets.workers.gui_thread import Cancelled, in_gui

log = logging.getLogger("maskbench.workers")


class TaskPool:
    """Priority pool: lower `priority` runs first; a task submitted with a `key` replaces a queued one with the
    same key. Results and errors go to `on_result`/`on_error` on the GUI thread; the returned Future also works
    without Qt (for scripts and benchmarks)."""

    def __init__(self, name: str, workers: int = 1) -> None:
        self.name = name
        self._heap: list[tuple[int, int, dict[str, Any]]] = []
        self._keys: dict[str, dict[str, Any]] = {}
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self._busy = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(max(1, workers))
        ]
        for t in self._threads:
            t.start()

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        priority: int = 10,
        key: str | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        owner: QObject | None = None,
        **kwargs: Any,
    ) -> Future[Any]:
        fut: Future[Any] = Future()
        task = {"fn": fn, "args": args, "kwargs": kwargs, "fut": fut, "on_result": on_result,
                "on_error": on_error, "owner": owner, "key": key, "dead": False}
        with self._cv:
            if self._closed:  # a late callback of a closed view: nothing to do
                fut.cancel()
                return fut
            if key is not None:
                old = self._keys.get(key)
                if old is not None:
                    old["dead"] = True
                    old["fut"].cancel()
                self._keys[key] = task
            heapq.heappush(self._heap, (priority, next(self._seq), task))
            self._cv.notify()
        return fut

    def cancel_pending(self, predicate: Callable[[str | None], bool] = lambda _k: True) -> int:
        """Drop queued (not running) tasks whose key matches; returns how many."""
        n = 0
        with self._cv:
            for _p, _s, task in self._heap:
                if not task["dead"] and predicate(task["key"]):
                    task["dead"] = True
                    task["fut"].cancel()
                    n += 1
        return n

    def pending(self) -> int:
        with self._cv:
            return sum(1 for _p, _s, t in self._heap if not t["dead"]) + self._busy

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._closed:
                    self._cv.wait()
                if self._closed and not self._heap:
                    return
                _p, _s, task = heapq.heappop(self._heap)
                if task["key"] is not None and self._keys.get(task["key"]) is task:
                    del self._keys[task["key"]]
                if task["dead"]:
                    continue
                self._busy += 1
            try:
                self._run(task)
            finally:
                with self._cv:
                    self._busy -= 1

    def _run(self, task: dict[str, Any]) -> None:
        fut: Future[Any] = task["fut"]
        if not fut.set_running_or_notify_cancel():
            return
        try:
            res = task["fn"](*task["args"], **task["kwargs"])
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            if not isinstance(exc, Cancelled):
                log.debug("task in %s failed", self.name, exc_info=True)
            fut.set_exception(exc)
            cb = task["on_error"]
            if cb is not None and QCoreApplication.instance() is not None:
                in_gui(lambda err=exc: cb(err), task["owner"])
            elif not isinstance(exc, Cancelled):
                log.warning("background task failed: %s: %s", exc.__class__.__name__, exc)
            return
        fut.set_result(res)
        cb = task["on_result"]
        if cb is not None and QCoreApplication.instance() is not None:
            in_gui(lambda: cb(res), task["owner"])

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for _p, _s, task in self._heap:
                task["dead"] = True
                task["fut"].cancel()
            self._heap.clear()
            self._cv.notify_all()
        # let a task already running (an ONNX Runtime / torch call) finish: a daemon thread still inside native code
        # when the interpreter exits aborts the process ("terminate called without an active exception")
        deadline = time.monotonic() + 30.0
        for t in getattr(self, "_threads", []):
            if t is not threading.current_thread() and t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
