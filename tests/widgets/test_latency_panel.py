"""Latency panel: a real local run on a small ONNX file in a child process, its log followed live, then the
history table, the latency plot with the target-FPS line, and the CSV export."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import pytest

from store.project import Project

torch = pytest.importorskip("torch")


def _tiny_onnx(path: Path) -> Path:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1),
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


@pytest.fixture
def panel(qtbot: Any, tmp_path: Path) -> Any:
    from widgets.latency_panel import LatencyPanel

    project = Project.create(tmp_path / "proj", overrides={"hardware": {"target_fps": 25}})
    w = LatencyPanel(project)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.close()
    project.close()


def test_local_run_updates_log_table_and_plot(qtbot: Any, panel: Any, tmp_path: Path) -> None:
    from widgets.latency_panel import COLUMNS

    model = _tiny_onnx(tmp_path / "tiny.onnx")
    assert panel.table.rowCount() == 0 and panel.plot_data() == []
    assert panel.target_line.value() == pytest.approx(1000 / 25)  # the project's target FPS, before any run
    lines: list[str] = []
    panel.logLine.connect(lines.append)
    with qtbot.waitSignal(panel.runFinished, timeout=180_000) as finished:
        assert panel.start_local(model, provider="cpu", batches="1,2", extra_args=["--iters", "5", "--warmup", "2"])
        assert panel.is_running()
        assert not panel.start_button.isEnabled() and panel.stop_button.isEnabled()
        assert not panel.start_local(model)  # one run at a time
    assert finished.args == [0], "\n".join(lines)
    assert not panel.is_running() and panel.start_button.isEnabled()
    # the log arrived line by line from the child process
    log_text = panel.log_view.toPlainText()
    assert "warm-up: 2 runs" in log_text and "stored 2 results" in log_text
    assert any("target 25 FPS (40.0 ms/frame)" in ln for ln in lines)
    # history table
    assert panel.table.rowCount() == 2
    headers = [panel.table.horizontalHeaderItem(i).text() for i in range(panel.table.columnCount())]
    assert headers == list(COLUMNS)
    rows = [[panel.table.item(r, c).text() for c in range(panel.table.columnCount())] for r in range(2)]
    assert {r[0] for r in rows} == {"tiny"}
    assert {r[1] for r in rows} == {"onnxruntime-cpu"} and {r[2] for r in rows} == {"fp32"}
    assert sorted(r[3] for r in rows) == ["1", "2"]
    for r in rows:
        assert float(r[5]) > 0 and float(r[6]) >= float(r[5]) and float(r[7]) > 0  # p50, p99, FPS
        assert r[4]  # device (the CPU model)
    # plot: one bar per model/precision/backend/batch, whiskers to p99, the target line at 1000 / 25 ms
    data = panel.plot_data()
    assert [label.splitlines()[0] for label, *_ in data] == ["tiny", "tiny"]
    assert [label.splitlines()[1:] for label, *_ in data] == [["fp32 b1", "ort-cpu"], ["fp32 b2", "ort-cpu"]]
    heights = list(panel.bars.opts["height"])
    assert heights == pytest.approx([d[1] for d in data]) and all(h > 0 for h in heights)
    assert panel.target_line.value() == pytest.approx(40.0)
    assert "25 FPS" in panel.target_line.label.format
    # CSV export
    out = tmp_path / "latency.csv"
    assert panel.export_csv(out) == 2
    with out.open(newline="") as f:
        exported = list(csv.DictReader(f))
    assert [r["model"] for r in exported] == ["tiny", "tiny"]
    assert {r["batch"] for r in exported} == {"1", "2"} and all(float(r["p50_ms"]) > 0 for r in exported)


def test_failed_run_reports_exit_code_and_keeps_history(qtbot: Any, panel: Any, tmp_path: Path) -> None:
    with qtbot.waitSignal(panel.runFinished, timeout=120_000) as finished:
        panel.start_local(tmp_path / "missing.onnx")
    assert finished.args == [1]
    assert "error: no model file" in panel.log_view.toPlainText()
    assert panel.status_label.text() == "failed (1)" and panel.table.rowCount() == 0


def test_stop_kills_a_running_benchmark(qtbot: Any, panel: Any, tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    with qtbot.waitSignal(panel.runFinished, timeout=120_000) as finished:
        panel.start_local(model, extra_args=["--iters", "100000000", "--min-time", "600", "--max-time", "600"])
        qtbot.waitUntil(lambda: "warm-up" in panel.log_view.toPlainText(), timeout=120_000)
        panel.stop()
    assert finished.args[0] != 0
    assert panel.table.rowCount() == 0  # nothing half-stored


def test_ssh_targets_are_offered(qtbot: Any, panel: Any, tmp_path: Path) -> None:
    from inference.bench.targets import add_target

    key = tmp_path / "key"
    key.write_text("not read here")
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    add_target(panel.project.db, "orin-nano", "10.0.0.7", "jetson", key, kh)
    panel.set_project(panel.project)
    assert [panel.where_combo.itemData(i) for i in range(panel.where_combo.count())] == ["local", "orin-nano"]
    panel.where_combo.setCurrentIndex(1)
    assert panel.precision_combo.isEnabled() and not panel.provider_combo.isEnabled()
