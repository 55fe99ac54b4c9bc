"""The window's background jobs (demo build, ingest, model import, judge runs, training…): wiring only.

Why this module is small: the work itself runs through widgets.workers.TaskHub (thread and process tasks, keys,
progress, cancel, one error line for the status bar). `JobManager` is that hub under the window's name for it, plus
`submit()`, the older call that returns a `Job` whose `finished` is a flag rather than a signal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from widgets.workers import TaskHub, ThreadTask


@dataclass(frozen=True)
class Job:
    """A submitted job: its ThreadTask's attributes (name, done, total, result, error, wait(), cancel()…) with
    `finished` meaning "has ended"."""

    task: ThreadTask

    @property
    def finished(self) -> bool:
        return not self.task.is_active()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)


class JobManager(TaskHub):
    def submit(self, name: str, fn: Callable[..., Any], *args: Any,
               on_result: Callable[[Any], None] | None = None, on_error: Callable[[str], None] | None = None,
               on_progress: Callable[[int, int], None] | None = None, **kwargs: Any) -> Job:
        """run() under its older name: fn gets `progress=` and `cancel=` when it takes them."""
        return Job(self.run(name, fn, *args, on_result=on_result, on_error=on_error, on_progress=on_progress,
                            **kwargs))
