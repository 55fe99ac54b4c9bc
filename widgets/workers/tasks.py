"""One background task as the GUI sees it: a Python callable on a thread pool, or a child process.

Why one class for both: a panel should not care whether its work is a function (an export, a judge run) or a
command (training, a benchmark) to show progress, offer Stop and report an error. Both are a `Task` with the same
signals, all emitted on the GUI thread, after `TaskHub.run()` / `TaskHub.process()` has returned (connect then):

    started()            the work began
    progress(done, total)
    output(str)          a line of output: the function's `log` callback, or the process's stdout
    finished(object)     the function's return value, or the process's exit code (any code: its log says why)
    failed(str)          one readable message (the function raised; the process could not start or crashed)
    cancelled()          cut off after cancel() (the function raised Cancelled, the process had to be killed),
                         or superseded by a newer task with the same key (its result, or error, is dropped)

Exactly one of finished / failed / cancelled ends a task. cancel() only asks: a function sees it through its
`cancel` token, a process gets SIGTERM (then SIGKILL after its grace period); work that still ends on its own after
being asked (a judge run returning its stats, a trainer saving last.pt and exiting) is `finished`.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QRunnable, QThreadPool, QTimer, Signal

from store.errors import UserError
from widgets.workers.gui_thread import Cancelled, in_gui

log = logging.getLogger("maskbench.workers")

PENDING, RUNNING, FINISHED, FAILED, CANCELLED = "pending", "running", "finished", "failed", "cancelled"
PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress updates a second reach the GUI (plus the last one)
EXIT_WAIT_MS = 30_000  # as TaskPool.close: an ONNX Runtime / torch call in flight gets this long to return


class CancelToken(threading.Event):
    """Cooperative cancel, passed to a function that takes `cancel=`: poll `is_set()`, or call `check()`, which
    raises Cancelled (the task then ends `cancelled`). A threading.Event, as the domain's functions expect."""

    def check(self) -> None:
        if self.is_set():
            raise Cancelled()


def describe_error(exc: BaseException) -> str:
    """One line for the status bar: a UserError (or a message that already starts with 'error') as it is, anything
    else with its class name."""
    text = str(exc)
    if isinstance(exc, UserError) or text.startswith("error"):
        return text
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


class Task(QObject):
    """The shared part: signals, state, progress, the cancel token. Use ThreadTask or ProcessTask."""

    started = Signal()
    progress = Signal(int, int)
    output = Signal(str)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, name: str, key: str | None = None, quiet: bool = False) -> None:
        super().__init__()
        self.name = name
        self.key = key
        self.quiet = quiet  # not in the status bar's summary, failures not reported there (the caller shows them)
        self.state = PENDING
        self.done = 0
        self.total = 0
        self.result: Any = None
        self.error: str | None = None
        self.token = CancelToken()
        self.superseded = False

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    def is_active(self) -> bool:
        """Not yet ended (pending or running), as seen on the GUI thread."""
        return self.state in (PENDING, RUNNING)

    def cancel(self) -> None:
        self.token.set()

    def supersede(self) -> None:
        """A newer task took this one's key: ask it to stop; whatever it returns is dropped."""
        self.superseded = True
        self.cancel()

    def report_progress(self, done: int, total: int) -> None:
        """Progress known on the GUI thread (a process's own output says how far it is)."""
        self.done, self.total = int(done), int(total)
        if self.is_active():
            self.progress.emit(self.done, self.total)

    def _begin(self) -> None:
        if self.state == PENDING:
            self.state = RUNNING
            self.started.emit()

    def _end(self, state: str, value: Any = None) -> None:
        if not self.is_active():
            return
        if self.superseded:
            state = CANCELLED
        self.state = state
        if state == FINISHED:
            self.result = value
            self.finished.emit(value)
        elif state == FAILED:
            self.error = str(value)
            self.failed.emit(self.error)
        else:
            self.cancelled.emit()


def accepted_params(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


_pool: QThreadPool | None = None


def thread_pool() -> QThreadPool:
    """The pool thread tasks run on: its own (not Qt's global one), sized for long jobs that mostly wait."""
    global _pool
    if _pool is None:
        _pool = QThreadPool()
        _pool.setMaxThreadCount(max(16, QThreadPool.globalInstance().maxThreadCount()))
        atexit.register(_drain)
    return _pool


def _drain() -> None:
    """At exit, drop queued tasks and let running ones return (bounded): a Qt thread still in Python code while
    the interpreter shuts down crashes the process."""
    if _pool is not None:
        _pool.clear()
        _pool.waitForDone(EXIT_WAIT_MS)


class _Runnable(QRunnable):
    def __init__(self, task: ThreadTask) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the task keeps it (tryTake hands a queued one back)
        self.task = task

    def run(self) -> None:
        self.task._work()


class ThreadTask(Task):
    """fn(*args, **kwargs) on a QThreadPool. fn gets `progress=` (done, total), `cancel=` (a CancelToken) and
    `log=` (a line for `output`) when its signature names them and the caller did not pass them."""

    def __init__(self, name: str, fn: Callable[..., Any], args: Sequence[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, key: str | None = None, quiet: bool = False,
                 pool: QThreadPool | None = None) -> None:
        super().__init__(name, key, quiet)
        self.fn = fn
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        params = accepted_params(fn)
        for param, value in (("progress", self._progress), ("cancel", self.token), ("log", self._log)):
            if param in params and param not in self.kwargs:
                self.kwargs[param] = value
        self.pool = pool or thread_pool()
        self._runnable = _Runnable(self)
        self._returned = threading.Event()
        self._last_progress = 0.0

    def start(self) -> None:
        self.pool.start(self._runnable)

    def supersede(self) -> None:
        super().supersede()
        if self.state == PENDING and self.pool.tryTake(self._runnable):  # still queued: it never runs
            self._returned.set()
            self._end(CANCELLED)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the function has returned (its signal may still be on its way); scripts and tests only."""
        return self._returned.wait(timeout)

    # worker thread -----------------------------------------------------------------------------------------------
    def _work(self) -> None:
        in_gui(self._begin, self)
        state, value = CANCELLED, None
        if not self.superseded:  # a cancelled one still runs: it sees its token and decides what to return
            try:
                state, value = FINISHED, self.fn(*self.args, **self.kwargs)
            except Cancelled:
                state = CANCELLED
            except BaseException as exc:  # noqa: BLE001 - reported on the GUI thread
                log.error("task %r failed", self.name, exc_info=True)
                state, value = FAILED, describe_error(exc)
        self._returned.set()
        in_gui(lambda: self._end(state, value), self)

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)
        now = time.monotonic()
        if now - self._last_progress > PROGRESS_INTERVAL_S or done >= total:
            self._last_progress = now
            in_gui(lambda: self.is_active() and self.progress.emit(self.done, self.total), self)

    def _log(self, line: str) -> None:
        in_gui(lambda: self.is_active() and self.output.emit(str(line)), self)


class ProcessTask(Task):
    """`program args` in a child process (QProcess): a crash or a hung connection in it cannot take the window
    down. stdout arrives line by line as `output`, stderr as `errorOutput` (both as `output` with
    merge_channels). cancel() sends SIGTERM and SIGKILL after `stop_grace_ms` (0: SIGKILL at once)."""

    errorOutput = Signal(str)  # one stderr line

    def __init__(self, name: str, program: str, args: Sequence[str], key: str | None = None, quiet: bool = False,
                 env: Mapping[str, str] | None = None, cwd: str | None = None, merge_channels: bool = False,
                 stop_grace_ms: int = 0) -> None:
        super().__init__(name, key, quiet)
        self.program = program
        self.args = list(args)
        self.stop_grace_ms = stop_grace_ms
        self.exit_code: int | None = None
        self.process = QProcess(self)
        environment = QProcessEnvironment.systemEnvironment()
        for k, v in {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}.items():
            environment.insert(k, v)
        self.process.setProcessEnvironment(environment)
        if cwd:
            self.process.setWorkingDirectory(str(cwd))
        if merge_channels:
            self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self._partial = {QProcess.ProcessChannel.StandardOutput: b"", QProcess.ProcessChannel.StandardError: b""}
        self.process.readyReadStandardOutput.connect(lambda: self._read(QProcess.ProcessChannel.StandardOutput))
        self.process.readyReadStandardError.connect(lambda: self._read(QProcess.ProcessChannel.StandardError))
        self.process.started.connect(self._begin)
        self.process.finished.connect(self._exited)
        self.process.errorOccurred.connect(self._error)
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.process.kill)

    def start(self) -> None:
        if self.state == PENDING and not self.token.is_set():
            self.process.start(self.program, self.args)

    def is_alive(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def cancel(self) -> None:
        super().cancel()
        if not self.is_alive():
            if self.state == PENDING:  # not started yet (the hub starts it on the next event loop turn)
                self._end(CANCELLED)
            return
        if self.stop_grace_ms > 0:
            self.process.terminate()
            self._kill_timer.start(self.stop_grace_ms)
        else:
            self.process.kill()

    def stop_and_wait(self, grace_ms: int | None = None) -> None:
        """Window closing only (this blocks): SIGTERM, wait up to grace_ms, SIGKILL, wait."""
        if not self.is_alive():
            self.cancel()  # a pending one never starts
            return
        self.token.set()
        grace = self.stop_grace_ms if grace_ms is None else grace_ms
        if grace > 0:
            self.process.terminate()
            if self.process.waitForFinished(grace):
                return
        self.process.kill()
        self.process.waitForFinished(5000)

    def _read(self, channel: QProcess.ProcessChannel, flush: bool = False) -> None:
        stderr = channel == QProcess.ProcessChannel.StandardError
        if stderr and self.process.processChannelMode() == QProcess.ProcessChannelMode.MergedChannels:
            return  # no stderr buffer then (reading it crashes Qt 6)
        chunk = self.process.readAllStandardError() if stderr else self.process.readAllStandardOutput()
        data = self._partial[channel] + bytes(chunk.data())
        *lines, rest = data.split(b"\n")
        if flush and rest:
            lines, rest = [*lines, rest], b""
        self._partial[channel] = rest
        signal = self.errorOutput if stderr else self.output
        for raw in lines:
            signal.emit(raw.decode("utf-8", "replace").rstrip("\r"))

    def _exited(self, code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        for channel in self._partial:
            self._read(channel, flush=True)
        if status == QProcess.ExitStatus.CrashExit:
            self.exit_code = -1
            if self.token.is_set():
                self._end(CANCELLED)
            else:
                self._end(FAILED, f"{self.name}: the process crashed")
        else:
            self.exit_code = int(code)
            self._end(FINISHED, self.exit_code)

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._end(FAILED, f"could not start {self.program}: {self.process.errorString()}")
