"""Stop requests for a training run: SIGTERM (the training panel's Stop, torchrun tearing a job down) and SIGINT
(Ctrl-C) set a flag instead of raising, so the loop ends the epoch it is in cleanly: the rank-0 callbacks validate,
write best.pt and last.pt (a resumable state) and mark the run "stopped". Every rank's flag is OR-ed across ranks by
the loop, so all of them stop at the same step."""

from __future__ import annotations

import contextlib
import signal

from inference.training.loop import Callback, TrainingLoop


class StopSignals(Callback):
    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.requested = True

        with contextlib.suppress(ValueError):  # not the main thread (tests calling train() from a thread)
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)

    def wants_stop(self, loop: TrainingLoop) -> bool:
        return self.requested
