"""A SIGKILL in the middle of an ingest leaves a database that opens cleanly with only whole samples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from store.project import Project
from store.schema import Mask, Sample
from store.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from store.project import Project
from store.ingest import ingest
p = Project.open(sys.argv[1])
def progress(done, total):
    print(done, flush=True)
ingest(p.db, sys.argv[2], batch_size=4, workers=1, progress=progress)
"""


def test_sigkill_mid_ingest_leaves_only_whole_samples(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data, 300, seed=3)
    Project.create(tmp_path / "p").close()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "p"), str(data)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # kill once a good part of the data is through, while batches are being written
        if int(line) >= 60 or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with Project.open(tmp_path / "p") as p:
        assert p.db.integrity_check() == "ok"
        with p.db.session() as s:
            n_samples = s.scalar(select(func.count(Sample.id)))
            orphans = s.scalar(select(func.count(Sample.id)).where(~Sample.masks.any()))
            n_masks = s.scalar(select(func.count(Mask.id)))
        assert 0 < n_samples < 300
        assert orphans == 0 and n_masks == n_samples
    # A new ingest completes the rest without duplicates.
    with Project.open(tmp_path / "p") as p:
        from store.ingest import ingest

        report = ingest(p.db, data)
        assert report.skipped_existing == n_samples and report.added_total == 300 - n_samples
