"""review.session.ReviewSession on a real SQLite project, without Qt: the queue's order, a verdict committed the
moment it is given (read back through a second connection), undo, corrections, the VLM keys, a failed write, and
prefetching. The runners here run work inline, so every callback has come back when a call returns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from review.flagging import flag
from review.queue_data import QueueFilter
from review.sample_data import load_sample
from review.session import NOT_SHOWN, PREFETCH, ReviewSession
from review.verdicts import effective_verdict, record_verdict
from store.db import Database
from store.project import Project
from store.schema import Disagreement, Verdict, VerdictAuthorKind

from review_helpers import build_project, copy_crops


class Inline:
    """A runner (TaskPool's submit/pending) that runs each task at once, or holds it until `run_held` when held."""

    def __init__(self) -> None:
        self.hold = False
        self.held: list[Callable[[], None]] = []

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = 10, key: str | None = None,
               on_result: Callable[[Any], None] | None = None, on_error: Callable[[BaseException], None] | None = None,
               owner: Any = None, **kwargs: Any) -> None:
        def run() -> None:
            try:
                res = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - handed to the caller's on_error, as TaskPool does
                if on_error is None:
                    raise
                on_error(exc)
                return
            if on_result is not None:
                on_result(res)

        if self.hold:
            self.held.append(run)
        else:
            run()

    def run_held(self) -> None:
        held, self.held = self.held, []
        for run in held:
            run()

    def pending(self) -> int:
        return len(self.held)


class Events:
    """The listener: records every on_* call as (name, *args)."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args: self.log.append((name, *args))

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [e[1:] for e in self.log if e[0] == name]


@pytest.fixture
def project(tmp_path: Path, magnetic_tile_pairs: list) -> Iterator[Project]:
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=3, classes=("MT_Blowhole", "MT_Crack"))
    p, _ = build_project(tmp_path / "p", data, scheme="mixed")
    flag(p.db, 0.15)
    yield p
    p.close()


def _session(project: Project, loader: Inline | None = None) -> tuple[ReviewSession, Events]:
    events = Events()
    rs = ReviewSession(events, loader or Inline(), Inline(), reviewer="ana")
    rs.upcoming = lambda n: _after(rs, n)
    rs.open(project.db)
    assert rs.reload()
    return rs, events


def _after(rs: ReviewSession, n: int) -> list[int]:
    order = rs.order()
    i = order.index(rs.current_id) if rs.current_id in order else -1
    return order[i + 1:i + 1 + n]


def _stored_human(project: Project) -> list[tuple[int, str, str]]:
    """Human verdict rows as another connection sees them (committed, not just flushed)."""
    other = Database(project.db.url, migrate=False)
    try:
        with other.session() as s:
            return [(v.sample_id, v.verdict.value, v.author) for v in s.scalars(
                select(Verdict).where(Verdict.author_kind == VerdictAuthorKind.HUMAN).order_by(Verdict.id))]
    finally:
        other.engine.dispose()


def test_queue_order_flagged_first_by_disagreement(project: Project) -> None:
    rs, events = _session(project)
    with project.db.session() as s:
        rows = s.execute(select(Disagreement.sample_id, Disagreement.flagged, Disagreement.iou_ts)).all()
    expected = [sid for sid, _f, _i in sorted(rows, key=lambda r: (not r[1], r[2], r[0]))]
    assert any(f for _s, f, _i in rows) and not all(f for _s, f, _i in rows)  # both kinds in the queue
    assert len(events.of("on_queue")) == 1 and rs.order() == expected
    assert rs.order(QueueFilter(flagged_only=True)) == [sid for sid, f, _i in sorted(
        rows, key=lambda r: (r[2], r[0])) if f]
    assert rs.order(column="id", descending=True) == sorted(expected, reverse=True)


def test_verdict_is_committed_at_once_and_the_view_follows(project: Project) -> None:
    rs, events = _session(project)
    first, second = rs.order()[:2]
    rs.go_to(first)
    assert rs.shown() and events.of("on_sample")[-1][0].sample_id == first
    assert rs.give_verdict("teacher_better") == first
    assert _stored_human(project) == [(first, "teacher_better", "ana")]  # before anything else happens
    assert events.of("on_verdict") == [(first, "teacher_better")]
    assert events.of("on_stored") == [(first, "teacher_better")]
    assert rs.cache.get(first).human == "teacher_better" and rs.stats.count == 1 and rs.writes_pending == 0
    rs.go_to(second)
    rs.give_verdict("both_bad")
    assert _stored_human(project) == [(first, "teacher_better", "ana"), (second, "both_bad", "ana")]


def test_no_verdict_before_the_crop_shows(project: Project) -> None:
    loader = Inline()
    rs, events = _session(project, loader)
    loader.hold = True
    first = rs.order()[0]
    rs.go_to(first)
    assert events.of("on_loading") == [(first,)] and not rs.shown()
    assert rs.give_verdict("both_good") is None and rs.accept_vlm() is None
    assert events.of("on_message")[-1] == (NOT_SHOWN,) and _stored_human(project) == []
    loader.run_held()
    assert rs.shown() and rs.current.sample_id == first


def test_undo_takes_back_the_latest_verdict_first(project: Project) -> None:
    rs, events = _session(project)
    a, b = rs.order()[:2]
    rs.go_to(a)
    rs.give_verdict("teacher_better")
    rs.go_to(b)
    rs.give_verdict("student_better")
    rs.undo()
    sid, reason, standing = events.of("on_undone")[-1]
    assert (sid, standing) == (b, None) and reason
    assert rs.current is None and rs.current_id == b  # the crop on screen is read again
    rs.undo()
    assert events.of("on_undone")[-1][0] == a and rs.stats.count == 0
    rs.undo()
    assert events.of("on_message")[-1] == ("nothing to undo",)
    with project.db.session() as s:
        assert effective_verdict(s, a) is None and effective_verdict(s, b) is None


def test_correction_is_stored_with_its_mask(project: Project) -> None:
    rs, events = _session(project)
    sid = rs.order()[0]
    rs.go_to(sid)
    mask = np.zeros(rs.current.image.shape[:2], bool)
    mask[5:20, 8:30] = True
    assert rs.save_correction(mask) == sid
    assert events.of("on_stored") == [(sid, "corrected")]
    again = load_sample(project.db, sid)
    assert again.human == "corrected" and np.array_equal(again.masks["corrected"], mask)


def test_vlm_verdict_accepted_then_rejected(project: Project) -> None:
    rs, events = _session(project)
    a, b = rs.order()[:2]
    for sid in (a, b):
        record_verdict(project.db, sid, "student_better", "vlm:test", author_kind="vlm", confidence=0.9)
    rs.go_to(a)
    assert rs.accept_vlm() == a
    assert _stored_human(project) == [(a, "student_better", "ana")]
    rs.go_to(b)
    assert rs.reject_vlm() == b
    assert rs.current.vlm is None and events.of("on_vlm_rejected") == [(b, "student_better")]
    assert events.of("on_stored")[-1] == (b, "reject_vlm") and b not in rs.cache
    with project.db.session() as s:
        assert effective_verdict(s, b) is None
    assert rs.stats.count == 2


def test_failed_write_is_said_and_counted_back(project: Project) -> None:
    rs, events = _session(project)
    sid = rs.order()[0]
    rs.go_to(sid)
    rs.give_verdict("not_a_verdict")
    assert events.of("on_message")[-1][0].startswith(f"NOT STORED: not_a_verdict for #{sid}")
    assert events.of("on_standing") == [(sid, None)] and rs.stats.count == 0 and rs.writes_pending == 0
    assert _stored_human(project) == []


def test_prefetch_loads_ahead_and_embeds_the_next(project: Project) -> None:
    rs, events = _session(project)
    order = rs.order()
    rs.go_to(order[0])
    assert all(sid in rs.cache for sid in order[1:1 + PREFETCH])
    assert [d.sample_id for (d,) in events.of("on_embed_ahead")] == [order[1]]
    rs.open(None)
    assert rs.current is None and not rs.reload() and order[1] not in rs.cache
