"""The GUI's worker API (widgets.workers): keyed thread tasks drop superseded work, cancel is cooperative, errors
reach the task's and the hub's `failed` as one line, and a child process has the same signals (finished carries
its exit code)."""

from __future__ import annotations

import sys
import threading
from typing import Any

from PySide6.QtCore import QThreadPool

from widgets.workers import Cancelled, CancelToken, TaskHub


def test_a_newer_task_with_the_same_key_drops_the_older_result(qtbot: Any) -> None:
    hub = TaskHub()
    gate = threading.Event()
    results: list[str] = []
    old = hub.run("count", lambda: (gate.wait(5), "old")[1], key="count", on_result=results.append)
    new = hub.run("count", lambda: "new", key="count", on_result=results.append)
    with qtbot.waitSignals([old.cancelled, new.finished], timeout=5_000):
        gate.set()
    qtbot.wait(50)
    assert results == ["new"] and old.state == "cancelled" and old.result is None and new.result == "new"
    assert hub.running() == []


def test_a_superseded_task_still_queued_never_runs(qtbot: Any) -> None:
    pool = QThreadPool()
    pool.setMaxThreadCount(1)
    hub = TaskHub(pool=pool)
    gate = threading.Event()
    ran: list[str] = []
    blocker = hub.run("blocker", gate.wait, 5)
    queued = hub.run("load", lambda: ran.append("queued"), key="load")
    latest = hub.run("load", lambda: ran.append("latest") or "latest", key="load")
    assert queued.state == "cancelled"  # taken off the pool's queue at once
    with qtbot.waitSignals([blocker.finished, latest.finished], timeout=5_000):
        gate.set()
    assert ran == ["latest"]
    pool.waitForDone(5_000)


def test_cancel_is_cooperative(qtbot: Any) -> None:
    hub = TaskHub()
    started = threading.Event()

    def loop(cancel: CancelToken) -> None:
        started.set()
        while True:
            cancel.check()  # raises Cancelled once asked
            cancel.wait(0.01)

    def polite(cancel: threading.Event) -> str:
        started.wait(5)
        cancel.wait(5)
        return "stopped early"

    task = hub.run("loop", loop)
    other = hub.run("polite", polite)
    assert started.wait(5)
    finished: list[Any] = []
    task.finished.connect(finished.append)
    with qtbot.waitSignals([task.cancelled, other.finished], timeout=5_000):
        hub.cancel_all()
    assert finished == [] and task.state == "cancelled" and other.result == "stopped early"
    assert task.wait(1)


def test_an_error_reaches_the_task_and_the_status_bar_signal(qtbot: Any) -> None:
    hub = TaskHub()
    bar: list[str] = []
    hub.failed.connect(bar.append)

    def boom() -> None:
        raise ValueError("broken input")

    task = hub.run("reading", boom)
    with qtbot.waitSignal(task.failed, timeout=5_000) as sig:
        pass
    assert sig.args == ["ValueError: broken input"] and task.error == "ValueError: broken input"
    assert bar == ["reading failed: ValueError: broken input"]
    quiet = hub.run("estimate", boom, quiet=True)  # the caller shows it; the status bar does not
    with qtbot.waitSignal(quiet.failed, timeout=5_000):
        pass
    cancelled = hub.run("raises Cancelled", lambda: (_ for _ in ()).throw(Cancelled()))
    with qtbot.waitSignal(cancelled.cancelled, timeout=5_000):
        pass
    assert bar == ["reading failed: ValueError: broken input"]


def test_progress_and_log_lines_arrive_on_the_gui_thread(qtbot: Any) -> None:
    hub = TaskHub()
    seen: list[tuple[int, int]] = []
    lines: list[str] = []

    def work(progress: Any, log: Any) -> int:
        for i in range(5):
            progress(i + 1, 5)
        log("half way")
        return 5

    task = hub.run("counting", work, on_progress=lambda d, t: seen.append((d, t)))
    task.output.connect(lines.append)
    with qtbot.waitSignal(task.finished, timeout=5_000) as sig:
        pass
    assert sig.args == [5] and seen[-1] == (5, 5) and lines == ["half way"]


def test_a_process_task_finishes_with_its_exit_code_and_output(qtbot: Any) -> None:
    hub = TaskHub()
    code = "import sys; print('first'); print('second', flush=True); sys.stderr.write('oops\\n'); sys.exit(3)"
    task = hub.process("child", sys.executable, ["-c", code])
    assert task.is_active() and hub.summary()[0] == "child"
    out: list[str] = []
    err: list[str] = []
    started: list[bool] = []
    task.started.connect(lambda: started.append(True))
    task.output.connect(out.append)
    task.errorOutput.connect(err.append)
    with qtbot.waitSignal(task.finished, timeout=30_000) as sig:
        pass
    assert sig.args == [3] and task.exit_code == 3 and started == [True]
    assert out == ["first", "second"] and err == ["oops"] and hub.running() == []


def test_a_process_task_is_cancelled_and_one_that_cannot_start_fails(qtbot: Any) -> None:
    hub = TaskHub()
    bar: list[str] = []
    hub.failed.connect(bar.append)
    task = hub.process("sleeper", sys.executable, ["-c", "import time; print('up', flush=True); time.sleep(60)"],
                       stop_grace_ms=5_000)
    with qtbot.waitSignal(task.output, timeout=30_000):
        pass
    with qtbot.waitSignal(task.cancelled, timeout=30_000):
        task.cancel()  # SIGTERM: Python dies of it, so the run was cut off
    assert task.exit_code == -1 and task.state == "cancelled"
    missing = hub.process("missing", "/nonexistent/maskbench-program", [])
    with qtbot.waitSignal(missing.failed, timeout=30_000) as sig:
        pass
    assert "could not start /nonexistent/maskbench-program" in sig.args[0]
    assert bar and bar[-1].startswith("missing failed: could not start")


def test_merged_channels_bring_stderr_lines_as_output(qtbot: Any) -> None:
    hub = TaskHub()
    code = "import sys; print('out', flush=True); sys.stderr.write('err\\nno newline')"
    task = hub.process("merged", sys.executable, ["-c", code], merge_channels=True)
    out: list[str] = []
    task.output.connect(out.append)
    with qtbot.waitSignal(task.finished, timeout=30_000) as sig:
        pass
    assert sig.args == [0] and out == ["out", "err", "no newline"]  # the last, unterminated line too
