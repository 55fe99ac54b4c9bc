"""One reviewer's sitting over a project's review queue, without Qt: what the review tab does, not how it looks.

`ReviewSession` owns the queue as loaded (review.queue_data), the crop shown and the cache of crops around it
(review.sample_data), which crops to prefetch and embed ahead, every verdict write (through review.verdicts: human
verdicts, accepting or rejecting the VLM's, corrections with the prompts behind them), undo, and the count and pace
of the sitting. widgets.review_view.ReviewWidget only draws and routes keys: it calls these methods and hears back
through a `ReviewListener` (itself).

Why apart from the widget: the widget was the one place where all of this could be exercised, and only with a
display; here the same decisions run under plain tests against a real SQLite project (tests/review/
test_review_session.py). Work leaves the caller's thread through two runners with TaskPool's `submit`/`pending`
(widgets.workers.TaskPool in the GUI, a synchronous one in tests): `loader` reads crops and the queue, `writer`
(one thread) writes verdicts in the order they were given, one transaction each, so a crash loses at most the
verdict in flight and the view moves on without waiting on the disk.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from review.queue_data import VERDICT_LABEL, VERDICTS, QueueColumns, QueueFilter, load_queue
from review.sample_data import SampleCache, SampleData, load_sample
from review.verdicts import HumanPrompt, accept_vlm_verdict, latest_verdicts, record_verdict, reject_vlm_verdict, \
    undo_last
from store.db import Database
from store.schema import VerdictAuthorKind

log = logging.getLogger("maskbench.review")

HUMAN_VERDICTS = VERDICTS[:4]  # what a reviewer can say of a crop with one key (a correction saves a mask)
PREFETCH = 3  # crops loaded ahead
PREFETCH_EMBED = 1  # crops embedded ahead
NOT_SHOWN = "wait for the crop to show before judging it"


class Runner(Protocol):
    """Runs `fn` elsewhere and calls back on the caller's thread (widgets.workers.TaskPool's API)."""

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = 10, key: str | None = None,
               on_result: Callable[[Any], None] | None = None, on_error: Callable[[BaseException], None] | None = None,
               owner: Any = None, **kwargs: Any) -> Any: ...

    def pending(self) -> int: ...


class ReviewListener(Protocol):
    """What the session tells its view; every call comes on the view's thread."""

    def on_message(self, text: str) -> None: ...
    def on_failed(self, text: str) -> None: ...  # the queue or the crop shown could not be read
    def on_loading(self, sample_id: int) -> None: ...  # the crop to show is not cached: it loads
    def on_queue(self, q: QueueColumns, keep: int | None) -> None: ...  # the queue (re)loaded; keep: reselect it
    def on_sample(self, data: SampleData) -> None: ...  # the crop to show now
    def on_embed_ahead(self, data: SampleData) -> None: ...  # a loaded crop that comes next: embed it now
    def on_verdict(self, sample_id: int, verdict: str) -> None: ...  # given (written in the background)
    def on_vlm_rejected(self, sample_id: int, vlm_verdict: str) -> None: ...  # given (written in the background)
    def on_stored(self, sample_id: int, verdict: str) -> None: ...  # committed; verdict or "reject_vlm"
    def on_standing(self, sample_id: int, verdict: str | None) -> None: ...  # the human verdict that stands now
    def on_undone(self, sample_id: int, reason: str, standing: str | None) -> None: ...
    def on_stats(self) -> None: ...  # the sitting's count changed


def standing_human(db: Database, sample_id: int) -> str | None:
    """The human verdict that stands on a sample (after undos), or None."""
    with db.session() as s:
        v = latest_verdicts(s, VerdictAuthorKind.HUMAN, [sample_id]).get(sample_id)
        return v.verdict.value if v is not None else None


def label(verdict: str) -> str:
    return VERDICT_LABEL.get(verdict, verdict)


class SessionStats:
    """Verdicts given in this sitting and the pace (reviews per hour since the first one)."""

    def __init__(self) -> None:
        self.count = 0
        self.started: float | None = None

    def add(self, n: int = 1) -> None:
        if self.started is None:
            self.started = time.monotonic()
        self.count = max(0, self.count + n)

    def per_hour(self) -> float:
        if self.started is None or self.count == 0:
            return 0.0
        elapsed = max(time.monotonic() - self.started, 30.0)  # no silly rates after the first few seconds
        return self.count * 3600.0 / elapsed


class ReviewSession:
    """The review queue of one project as one reviewer works through it (module docstring).

    `upcoming(n)` gives the sample ids after the current one in the view's order (its filter and sort), for
    prefetching; `owner` goes with every submitted task (TaskPool skips callbacks of a deleted owner)."""

    def __init__(self, listener: ReviewListener, loader: Runner, writer: Runner, *, reviewer: str = "reviewer",
                 upcoming: Callable[[int], list[int]] = lambda _n: [], owner: Any = None,
                 cache_size: int = 16) -> None:
        self.listener = listener
        self.loader = loader
        self.writer = writer
        self.reviewer = reviewer
        self.upcoming = upcoming
        self.owner = owner
        self.db: Database | None = None
        self.queue = QueueColumns.empty()
        self.cache = SampleCache(cache_size)
        self.current: SampleData | None = None
        self.current_id: int | None = None
        self.stats = SessionStats()
        self._loading: set[int] = set()
        self._write_seq = itertools.count()
        self._writes_pending = 0

    # queue --------------------------------------------------------------------------------------------------------
    def open(self, db: Database | None) -> None:
        """Work on another project's database (None: none); the queue loads with `reload`."""
        self.db = db
        self.queue = QueueColumns.empty()
        self.cache.clear()
        self.go_to(None)

    def reload(self) -> bool:
        """Re-read the queue (after a judge run, new predictions, another reviewer's work); False without a
        project. The listener's on_queue gets it, with the crop to keep on screen."""
        if self.db is None:
            return False
        keep, db = self.current_id, self.db
        self.loader.submit(load_queue, db, priority=-1, key="queue",
                           on_result=lambda q: self._queue_loaded(q, keep, db),
                           on_error=lambda e: self.listener.on_failed(f"cannot load the queue: {e}"),
                           owner=self.owner)
        return True

    def _queue_loaded(self, q: QueueColumns, keep: int | None, db: Database) -> None:
        if self.db is not db:  # another project opened meanwhile
            return
        self.queue = q
        self.cache.clear()
        self.listener.on_queue(q, keep)

    def order(self, f: QueueFilter | None = None, column: str | None = None, descending: bool = False) -> list[int]:
        """Sample ids of the loaded queue in review order (default: flagged first, lowest teacher/student IoU
        first, crops without a comparison last), those passing `f`, sorted by `column` if given."""
        return [int(x) for x in self.queue.sample_id[self.queue.shown_rows(f, column, descending)]]

    # position and prefetch ----------------------------------------------------------------------------------------
    def go_to(self, sample_id: int | None) -> None:
        """Make `sample_id` the current crop: the listener's on_sample gets it now when cached, else on_loading now
        and on_sample once read; then what follows is prefetched."""
        self.current_id = sample_id
        if sample_id is None:
            self.current = None
            return
        data = self.cache.get(sample_id)
        if data is None:
            self.listener.on_loading(sample_id)
            self._load(sample_id, priority=0)
        else:
            self.current = data
            self.listener.on_sample(data)
        self.prefetch()

    def shown(self) -> bool:
        """The current crop has loaded (verdicts are about what the reviewer sees)."""
        return self.db is not None and self.current is not None and self.current.sample_id == self.current_id

    def prefetch(self) -> None:
        """Load the next PREFETCH crops, embed the next PREFETCH_EMBED of them, keep the current one freshest."""
        for i, sid in enumerate(self.upcoming(PREFETCH)):
            data = self.cache.get(sid)
            if data is None:
                self._load(sid, priority=5 + i)
            elif i < PREFETCH_EMBED:
                self.listener.on_embed_ahead(data)
        if self.current_id is not None:
            self.cache.get(self.current_id)

    def _load(self, sample_id: int, priority: int) -> None:
        if self.db is None or (sample_id in self._loading and priority > 0):
            return
        self._loading.add(sample_id)
        self.loader.submit(load_sample, self.db, sample_id, priority=priority, key=f"s{sample_id}",
                           on_result=self._loaded, on_error=lambda e, s=sample_id: self._load_failed(s, e),
                           owner=self.owner)

    def _loaded(self, data: SampleData) -> None:
        self._loading.discard(data.sample_id)
        self.cache.put(data)
        if data.sample_id == self.current_id and (self.current is None or self.current.sample_id != data.sample_id):
            self.current = data
            self.listener.on_sample(data)
        elif data.sample_id in self.upcoming(PREFETCH_EMBED):
            self.listener.on_embed_ahead(data)

    def _load_failed(self, sample_id: int, exc: BaseException) -> None:
        self._loading.discard(sample_id)
        if sample_id == self.current_id:
            self.listener.on_failed(f"cannot load crop {sample_id}: {exc}")

    # verdicts -----------------------------------------------------------------------------------------------------
    def _write(self, fn: Callable[..., Any], *args: Any, on_result: Callable[[Any], None],
               on_error: Callable[[BaseException], None], **kwargs: Any) -> None:
        self._writes_pending += 1

        def done(r: Any) -> None:
            self._writes_pending -= 1
            on_result(r)

        def failed(e: BaseException) -> None:
            self._writes_pending -= 1
            on_error(e)

        self.writer.submit(fn, *args, priority=next(self._write_seq), on_result=done, on_error=failed,
                           owner=self.owner, **kwargs)

    @property
    def writes_pending(self) -> int:
        return self._writes_pending

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until queued verdict writes are done (used when closing)."""
        deadline = time.monotonic() + timeout_s
        while self.writer.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.writer.pending() == 0

    def give_verdict(self, verdict: str) -> int | None:
        """Write the reviewer's verdict on the crop shown; returns its sample id (None: no crop shown)."""
        if not self.shown():
            self.listener.on_message(NOT_SHOWN)
            return None
        sid = self.current_id
        assert sid is not None
        self._write_verdict(sid, verdict, record_verdict, self.db, sid, verdict, self.reviewer)
        return sid

    def _write_verdict(self, sid: int, verdict: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Count and cache the verdict as given, queue its write, then tell the view (which moves on)."""
        data = self.cache.get(sid)
        if data is not None:
            data.human = verdict
            if verdict != "corrected":
                data.masks["corrected"] = None
        self.stats.add(1)
        self._write(fn, *args, on_result=lambda _v: self.listener.on_stored(sid, verdict),
                    on_error=lambda e: self._write_failed(sid, verdict, e), **kwargs)
        self.listener.on_verdict(sid, verdict)

    def _shown_vlm(self) -> tuple[int, dict[str, Any]] | None:
        """The crop shown and its VLM verdict, or None with a one-line message saying why not."""
        if not self.shown():
            self.listener.on_message(NOT_SHOWN)
            return None
        assert self.current is not None
        if not self.current.vlm:
            self.listener.on_message(f"#{self.current.sample_id}: no VLM verdict on this crop: nothing to accept or "
                                     "reject")
            return None
        return self.current.sample_id, self.current.vlm

    def accept_vlm(self) -> int | None:
        """The VLM judge's verdict becomes the reviewer's (review.verdicts.accept_vlm_verdict)."""
        shown = self._shown_vlm()
        if shown is None:
            return None
        sid, vlm = shown
        verdict = vlm["verdict"]
        if verdict not in HUMAN_VERDICTS:  # "uncertain": no human verdict says that
            self.listener.on_message(f"#{sid}: the VLM judge is {label(verdict)}: nothing to accept, give your own "
                                     "verdict")
            return None
        self._write_verdict(sid, verdict, accept_vlm_verdict, self.db, sid, self.reviewer, vlm.get("id"))
        return sid

    def reject_vlm(self) -> int | None:
        """The VLM judge's verdict stops counting (review.verdicts.reject_vlm_verdict); the crop stays pending for a
        human verdict. Undo takes a rejection back."""
        shown = self._shown_vlm()
        if shown is None:
            return None
        sid, vlm = shown
        assert self.current is not None
        self.current.vlm = None  # the cached crop shows "not judged" until it is read again
        self.stats.add(1)
        self._write(reject_vlm_verdict, self.db, sid, self.reviewer, vlm.get("id"),
                    on_result=lambda _v: self._vlm_rejected(sid),
                    on_error=lambda e: self._write_failed(sid, "reject VLM", e))
        self.listener.on_vlm_rejected(sid, vlm["verdict"])
        return sid

    def _vlm_rejected(self, sid: int) -> None:
        self.cache.drop(sid)  # read again on return: an older VLM verdict, if any, is the one in effect now
        self.listener.on_stored(sid, "reject_vlm")

    def save_correction(self, mask: np.ndarray, prompt: HumanPrompt | None = None) -> int | None:
        """Store `mask` as the reviewer's correction of the crop shown, with the prompts and the model's answer
        behind it (a replayable human-prompted prediction) in the same transaction."""
        if self.db is None or self.current is None:
            return None
        sid = self.current.sample_id
        data = self.cache.get(sid)
        if data is not None:
            data.masks["corrected"] = mask
        self._write_verdict(sid, "corrected", record_verdict, self.db, sid, "corrected", self.reviewer,
                            corrected_mask=mask, prompt=prompt)
        return sid

    def _write_failed(self, sid: int, verdict: str, exc: BaseException) -> None:
        log.error("verdict %s for %s not stored: %s", verdict, sid, exc)
        self.listener.on_message(f"NOT STORED: {verdict} for #{sid}: {exc}")
        self.stats.add(-1)
        self.listener.on_stats()
        self.refresh(sid)

    def refresh(self, sid: int) -> None:
        """Read again what stands on a sample (after a failed write): the listener's on_standing gets it."""
        if self.db is None:
            return
        self.cache.drop(sid)
        self.loader.submit(standing_human, self.db, sid, priority=-1,
                           on_result=lambda v: self.listener.on_standing(sid, v), owner=self.owner)

    def undo(self) -> None:
        """Take back the reviewer's latest verdict (an append-only UNDO row, written after every verdict queued
        before it); the listener hears on_undone, or a message that there was nothing to undo."""
        if self.db is None:
            return
        db, reviewer = self.db, self.reviewer

        def work() -> tuple[int, str, str | None] | None:
            row = undo_last(db, reviewer)
            if row is None:
                return None
            return row.sample_id, row.reason or "", standing_human(db, row.sample_id)

        self._write(work, on_result=self._undone, on_error=lambda e: self.listener.on_message(f"undo failed: {e}"))

    def _undone(self, res: tuple[int, str, str | None] | None) -> None:
        if res is None:
            self.listener.on_message("nothing to undo")
            return
        sid, reason, standing = res
        self.stats.add(-1)
        self.cache.drop(sid)
        if self.current_id == sid:
            self.current = None  # shown again from the store
        self.listener.on_undone(sid, reason, standing)
