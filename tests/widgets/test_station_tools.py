"""On an install without the torch stack (a station bundle) the Training and Export tabs say why they cannot run and
start nothing; with it they are enabled. The install is told to the panels as the list of absent modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference import capabilities


def test_capabilities_finds_what_is_missing() -> None:
    assert capabilities.missing(("json", "maskbench_no_such_module")) == ["maskbench_no_such_module"]
    assert capabilities.torch_stack_reason("Training", []) is None
    line = capabilities.torch_stack_reason("Training", ["torch", "sam2"])
    assert line is not None and line.startswith("Training needs torch, sam2") and "\n" not in line


def test_training_tab_on_a_station_starts_nothing(qtbot: Any, tile_project: tuple[Path, Any]) -> None:
    from store.project import Project
    from widgets.training_panel import TrainingPanel

    with Project.open(tile_project[0]) as project:
        panel = TrainingPanel(project, absent=["torch", "timm", "sam2"])
        qtbot.addWidget(panel)
        assert not panel.start_btn.isEnabled() and not panel.resume_btn.isEnabled()
        assert panel.status_label.text().startswith("Training needs torch, timm, sam2")
        assert not panel.start() and panel.process is None
        full = TrainingPanel(project, absent=[])
        qtbot.addWidget(full)
        assert full.start_btn.isEnabled() and full.unavailable is None


def test_export_tab_on_a_station_starts_nothing(qtbot: Any, tile_project: tuple[Path, Any]) -> None:
    from widgets.export_panel import ExportPanel

    panel = ExportPanel(tile_project[0], absent=["torch"])
    qtbot.addWidget(panel)
    assert not panel.run_button.isEnabled() and panel.status.text().startswith("Export needs torch")
    assert not panel.start_export() and not panel.is_running()
    full = ExportPanel(tile_project[0], absent=[])
    qtbot.addWidget(full)
    assert full.run_button.isEnabled()
