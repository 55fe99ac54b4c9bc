"""The Export panel runs a real export in a worker thread (the GUI thread keeps processing events) and its table
fills from the project's Export rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from PySide6.QtCore import QUrl  # noqa: E402
from PySide6.QtGui import QDesktopServices  # noqa: E402

from store.ingest import ingest  # noqa: E402
from store.project import Project  # noqa: E402
from widgets.export_panel import ExportPanel  # noqa: E402


@pytest.fixture
def project(tmp_path: Path, magnetic_tile_pairs: list) -> Path:
    data = tmp_path / "data"
    counts: dict[str, int] = {}
    for img, mask, cls in magnetic_tile_pairs:
        if counts.get(cls, 0) >= 6:
            continue
        counts[cls] = counts.get(cls, 0) + 1
        (data / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, data / cls / img.name)
        shutil.copy(mask, data / cls / mask.name)
    with Project.create(tmp_path / "proj") as p:
        ingest(p.db, data)
    return tmp_path / "proj"


def test_panel_exports_in_background_and_fills_table(qtbot, project: Path, monkeypatch) -> None:
    import torch

    from inference.student import StudentConfig, StudentModel

    torch.manual_seed(0)
    student = StudentModel(StudentConfig(input_size=256)).eval()
    panel = ExportPanel(project)
    qtbot.addWidget(panel)
    assert panel.row_count() == 0
    for key, box in panel.precision_boxes.items():
        box.setChecked(key in ("fp32", "int8_weight"))
    progress_seen: list[int] = []
    panel.progress.valueChanged.connect(progress_seen.append)
    ticks: list[int] = []
    from PySide6.QtCore import QTimer

    timer = QTimer(panel)
    timer.timeout.connect(lambda: ticks.append(1))  # runs only if the GUI thread is free during the export
    timer.start(20)
    with qtbot.waitSignal(panel.export_finished, timeout=120_000) as sig:
        assert panel.start_export(student=student, split_pair=False, parity_samples=2, val_limit=3)
        assert panel.is_running() and not panel.run_button.isEnabled()
        assert not panel.start_export(student=student)  # one export at a time
    timer.stop()
    summary = sig.args[0]
    assert len(ticks) > 10
    assert panel.row_count() == 2 and not panel.is_running() and panel.run_button.isEnabled()
    texts = {panel.table.item(r, 0).text(): [panel.table.item(r, c).text() for c in range(9)]
             for r in range(panel.row_count())}
    assert {t[8] for t in texts.values()} == {"compatible"}  # the static TensorRT check, per file
    assert set(texts) == {"student_single_fp32.onnx", "student_single_int8_weight.onnx"}
    fp32 = texts["student_single_fp32.onnx"]
    assert fp32[3] == "ok" and float(fp32[5]) >= 0.99 and float(fp32[4]) > 1.0 and fp32[7] != "–"
    assert max(progress_seen) >= 1 and str(summary.out_dir) in panel.status.text()
    cpu = {name: panel.table.item(r, 9).text() for r in range(panel.row_count())
           for name in [panel.table.item(r, 0).text()]}  # CPU latency measured by the export, one run for both
    assert cpu["student_single_fp32.onnx"].endswith("(1.00x)") and float(cpu["student_single_fp32.onnx"].split()[0]) > 0
    assert cpu["student_single_int8_weight.onnx"].endswith("x)")

    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url) or True))
    panel.table.selectRow(0)
    assert panel.reveal_selected()
    assert Path(opened[0].toLocalFile()) == summary.out_dir


def test_panel_reports_a_missing_student(qtbot, project: Path) -> None:
    panel = ExportPanel(project)
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.export_failed, timeout=30_000) as sig:
        panel.start_export()
    assert "no student to export" in sig.args[0]
    assert "export failed" in panel.status.text() and panel.run_button.isEnabled()
