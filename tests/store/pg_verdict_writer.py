"""One inspection station, as a separate OS process: opens a project (whose project.yaml names a shared PostgreSQL
store), waits for "go" on stdin so that two stations really write at the same time, then records verdicts with
review.verdicts like the GUI does (one transaction each): plain verdicts over the given samples in turn, a corrected
mask every 10th, an undo every 7th. Prints one JSON line with what it wrote, for the test to compare with the store.

    python tests/store/pg_verdict_writer.py PROJECT_ROOT AUTHOR N SAMPLE_ID[,SAMPLE_ID...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

KINDS = ("teacher_better", "student_better", "both_good", "both_bad")


def main(root: Path, author: str, n: int, sample_ids: list[int]) -> dict[str, list[list[object]]]:
    from review.verdicts import record_verdict, undo_last
    from store.project import Project
    from store.schema import Sample

    written: list[list[object]] = []  # [verdict id, sample id, kind, reason, corrected mask id]
    undos: list[list[object]] = []  # [undo row id, id of the verdict it cancels]
    with Project.open(root) as project:
        with project.db.session() as s:
            sizes = {sid: (s.get(Sample, sid).height, s.get(Sample, sid).width) for sid in sample_ids}
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("no go")
        for i in range(n):
            sid = sample_ids[i % len(sample_ids)]
            reason = f"{author} #{i}"
            if i % 10 == 9:
                mask = np.zeros(sizes[sid], bool)
                mask[: 1 + i % sizes[sid][0], : 1 + i % sizes[sid][1]] = True
                v = record_verdict(project.db, sid, "corrected", author, reason=reason, corrected_mask=mask)
            else:
                v = record_verdict(project.db, sid, KINDS[i % len(KINDS)], author, confidence=round(i / n, 4),
                                   reason=reason)
            written.append([v.id, sid, v.verdict.value, reason, v.corrected_mask_id])
            if i % 7 == 6:
                u = undo_last(project.db, author)
                assert u is not None
                undos.append([u.id, u.supersedes_id])
    return {"written": written, "undos": undos}


if __name__ == "__main__":
    out = main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), [int(x) for x in sys.argv[4].split(",")])
    print(json.dumps(out), flush=True)
