"""Getting back onto the GUI thread: `in_gui(fn, owner)` runs fn there, from any thread.

Why a module of its own: every kind of background work (TaskPool's priority queues, TaskHub's thread and process
tasks) delivers through this one queued signal, so a callback never touches a widget from a worker thread, and a
callback whose owner widget is gone is skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal

log = logging.getLogger("maskbench.workers")


class Cancelled(Exception):
    """Raised inside a task (or reported) when it was dropped or cancelled before it could finish."""


class _Bridge(QObject):
    """Lives in the GUI thread; `call.emit(fn)` from any thread runs fn there."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run, Qt.ConnectionType.QueuedConnection)

    def _run(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a failing callback must not kill the event loop
            log.exception("callback failed")


_bridge: _Bridge | None = None
_bridge_lock = threading.Lock()


def bridge() -> _Bridge:
    global _bridge
    with _bridge_lock:
        if _bridge is None or not shiboken6.isValid(_bridge):
            app = QCoreApplication.instance()
            _bridge = _Bridge()
            if app is not None and _bridge.thread() is not app.thread():
                _bridge.moveToThread(app.thread())
        return _bridge


def in_gui(fn: Callable[[], None], owner: QObject | None = None) -> None:
    """Run fn on the GUI thread (now if already there and no event loop hop is wanted: always queued)."""
    if owner is not None:
        inner = fn

        def fn() -> None:  # type: ignore[no-redef]
            if shiboken6.isValid(owner):
                inner()

    bridge().call.emit(fn)


def is_gui_thread() -> bool:
    app = QCoreApplication.instance()
    return app is not None and QThread.currentThread() is app.thread()
