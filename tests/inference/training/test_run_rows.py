"""A training killed outright (SIGKILL) never records its final status: the next `train` on the project marks its
"running" row failed when the process named by the run folder's train.pid is gone, and leaves every row it cannot
judge alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from inference.training.run_rows import PID_FILE, fail_stale_runs, remove_pid, write_pid
from store.project import Project
from store.schema import TrainingRun


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_running_rows_of_gone_processes_are_marked_failed(tmp_path: Path) -> None:
    pids = {"killed": _dead_pid(), "alive": os.getppid(), "other-host": _dead_pid()}
    with Project.create(tmp_path / "project") as p:
        ids = {}
        with p.db.session() as s:
            for name in ("killed", "alive", "other-host", "no-pid-file", "finished"):
                out = tmp_path / "runs" / name
                out.mkdir(parents=True)
                if name in pids:
                    host = "elsewhere" if name == "other-host" else socket.gethostname()
                    (out / PID_FILE).write_text(json.dumps({"pid": pids[name], "host": host}))
                row = TrainingRun(name=name, mode="distill", status="finished" if name == "finished" else "running",
                                  out_dir=str(out))
                s.add(row)
                s.flush()
                ids[name] = row.id
        assert fail_stale_runs(p) == [(ids["killed"], "killed")]
        with p.db.session() as s:
            status = {name: (s.get(TrainingRun, i).status, s.get(TrainingRun, i).finished_at) for name, i in ids.items()}
        assert status["killed"][0] == "failed" and status["killed"][1] is not None
        assert {k: v[0] for k, v in status.items() if k != "killed"} == {
            "alive": "running", "other-host": "running", "no-pid-file": "running", "finished": "finished"}
        assert fail_stale_runs(p) == []  # judged once


def test_pid_file_names_this_process_while_it_runs(tmp_path: Path) -> None:
    write_pid(tmp_path)
    info = json.loads((tmp_path / PID_FILE).read_text())
    assert info == {"pid": os.getpid(), "host": socket.gethostname()}
    remove_pid(tmp_path)
    remove_pid(tmp_path)  # gone already: no error
    assert not (tmp_path / PID_FILE).exists()
