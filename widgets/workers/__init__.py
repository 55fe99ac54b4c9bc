"""The GUI's one way to leave the GUI thread (in the spirit of napari's thread_worker and superqt).

Why: the window used to have five (a priority pool, a job manager, bare threads, a QThread, two hand-wired
QProcesses), each with its own signals and error handling. Now:

- `TaskHub.run(name, fn, *args, key=...)`: fn on a thread pool. It may take `progress(done, total)`, `cancel`
  (a CancelToken, a threading.Event) and `log(line)`; a newer task with the same key supersedes an older one, whose
  result is dropped. Returns a ThreadTask.
- `TaskHub.process(name, program, args, key=...)`: a child process (training, benchmarks) behind the same
  interface; stdout lines arrive as `output`. Returns a ProcessTask.
- Every task has the signals started, progress(done, total), output(str), finished(object), failed(str),
  cancelled(), emitted on the GUI thread; exactly one of the last three ends it (see widgets.workers.tasks).
- The hub's `failed(str)` carries every failure as one readable line; the window shows it in its status bar, and
  `changed` / `summary()` drive the status bar's progress.
- `TaskPool` stays for the review views' many small prioritised loads (crops, embeddings, decodes), and
  `in_gui(fn, owner)` is the hop back to the GUI thread under all of them.

Signal naming, here and in the panels: Qt's lowerCamelCase (`errorOutput`, `runFinished`); the few snake_case
panel signals that tests wait on (export_finished, export_failed, run_finished) keep their names.
"""

from widgets.workers.gui_thread import Cancelled, bridge, in_gui, is_gui_thread
from widgets.workers.hub import TaskHub
from widgets.workers.pool import TaskPool
from widgets.workers.tasks import CancelToken, ProcessTask, Task, ThreadTask, describe_error, thread_pool

__all__ = ["CancelToken", "Cancelled", "ProcessTask", "Task", "TaskHub", "TaskPool", "ThreadTask", "bridge",
           "describe_error", "in_gui", "is_gui_thread", "thread_pool"]
