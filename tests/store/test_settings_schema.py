"""project.yaml's typed schema (store.settings_schema): one-line errors naming the file and the key (with the closest
valid key for a misspelling), projects written by `maskbench init` (old and new) still open, the schema's defaults
are the ones init writes and training adds, and the CLI and the GUI show the error as one line."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from store import config as config_mod
from store import settings_schema as schema
from store.errors import ConfigError
from store.project import Project, ProjectError

REPO = Path(__file__).resolve().parents[2]

# What `maskbench init` wrote before issue 17 (seed 001's template keys nothing read, since removed from DEFAULTS).
OLD_INIT_YAML = """\
name: old
database_url: null
distillation:
  teacher: {model: sam2.1_hiera_s, precision: fp16, freeze: true}
  student: {backbone: efficientnet_b0, prompt_encoder: dense_point_only, decoder_upsample: 1/2,
            quantization: int8_weight_only, input_size: 512}
  loss: {feature_weight: 0.4, soft_bce_weight: 0.3, dice_weight: 0.3, temperature: 2.0}
  training: {epochs: 150, batch_size: 32, lr: 0.001, weight_decay: 0.01, scheduler: cosine_annealing, grad_clip: 1.0,
             split: [0.8, 0.1, 0.1], split_seed: 1234, points_per_sample: 1}
  disagreement_threshold: 0.15
  vlm_review: true
hardware: {target: jetson_orin_nano, target_fps: 30, calibration_samples: 500}
judge:
  model: openai/gpt-4o
  fallbacks: [anthropic/claude-3-5-sonnet-20240620]
  api_base: null
  budget_usd: 5.0
  workers: 4
  timeout_s: 60
  retries: 2
  swap: false
  prompt_version: v2
  domain: {surface: an industrial surface, defects: {}}
  prices: {}
  trust: 0.5
weights: {student_better_teacher_scale: 0.3, hard_sample_scale: 2.0, vlm_trust: 0.5}
embedding_cache: {max_gb: 4.0}
backup: {every_hours: 24.0, keep: 7}
"""


def _init(root: Path) -> Path:
    assert main(["init", str(root)]) == 0
    return root / "project.yaml"


def _edit(path: Path, dotted: str, value: Any) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    node = doc
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _open_error(root: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        Project.open(root)
    assert isinstance(exc.value, ProjectError)  # callers catching either keep working
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_misspelled_key_names_the_file_the_key_and_the_closest_valid_key(tmp_path: Path) -> None:
    path = _init(tmp_path / "p")
    _edit(path, "distillation.training.batch_sise", 16)
    msg = _open_error(tmp_path / "p")
    assert msg == (f"{path}: unknown key distillation.training.batch_sise "
                   "(did you mean distillation.training.batch_size?)")


@pytest.mark.parametrize("dotted,value,message", [
    ("distillation.training.lr", "banana", "distillation.training.lr must be a number, got 'banana'"),
    ("distillation.training.epochs", "many", "distillation.training.epochs must be an integer, got 'many'"),
    ("distillation.training.epochs", 1.5, "distillation.training.epochs must be an integer, got 1.5"),
    ("distillation.training.amp", "maybe", "distillation.training.amp must be true or false, got 'maybe'"),
    ("distillation.training.split", [0.8, "x", 0.1], "distillation.training.split[1] must be a number, got 'x'"),
    ("distillation.student.layout", [1], "distillation.student.layout must be text, got [1]"),
    ("hardware", None, "hardware must be a mapping, got nothing (null)"),
    ("judge.prices", {"openai/x": {"input_per_1k": "cheap"}},
     "judge.prices['openai/x'].input_per_1k must be a number, got 'cheap'"),
    ("judge.workerz", 2, "unknown key judge.workerz (did you mean judge.workers?)"),
    ("judge.domain.vocabulary", {}, "unknown key judge.domain.vocabulary (valid keys in judge.domain: surface, defects)"),
    ("distillation.lr", 0.01, "unknown key distillation.lr (did you mean distillation.training.lr?)"),
    ("hardwere", {}, "unknown key hardwere (did you mean hardware?)"),
])
def test_a_bad_value_or_key_is_one_line_naming_the_key(tmp_path: Path, dotted: str, value: Any, message: str) -> None:
    path = _init(tmp_path / "p")
    _edit(path, dotted, value)
    with pytest.raises(ConfigError) as exc:
        config_mod.load(path)
    assert str(exc.value) == f"{path}: {message}"


def test_a_project_from_init_loads_with_the_defaults_shape(tmp_path: Path) -> None:
    path = _init(tmp_path / "p")
    cfg = config_mod.load(path)
    assert cfg == {**config_mod.DEFAULTS, "name": "p"}  # the same dict shape and values the code always read
    with Project.open(tmp_path / "p") as p:
        assert p.config["distillation"]["training"]["batch_size"] == 32
    # types are coerced: YAML reads 1e-4 (no dot) as a string, a number as a name
    _edit(path, "distillation.training.lr", "1e-4")
    _edit(path, "name", 2024)
    cfg = config_mod.load(path)
    assert cfg["distillation"]["training"]["lr"] == pytest.approx(1e-4) and cfg["name"] == "2024"
    # settings training adds (inference.training.settings.EXTRA_DEFAULTS) and the panels write are valid keys
    _edit(path, "distillation.training.augment", False)
    _edit(path, "distillation.training.device", "cuda")
    _edit(path, "distillation.qat", {"epochs": 3, "checkpoint": None})
    cfg = config_mod.load(path)
    assert cfg["distillation"]["training"]["augment"] is None and cfg["distillation"]["qat"] == {
        "epochs": 3, "checkpoint": None}


def test_an_old_init_project_yaml_opens_and_its_unread_keys_are_dropped_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "old"
    root.mkdir()
    (root / "project.yaml").write_text(OLD_INIT_YAML, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="maskbench.store"):
        with Project.open(root) as p:
            assert p.config == {**config_mod.DEFAULTS, "name": "old"}
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "nothing reads" in warned
    for key in ("judge.trust", "distillation.vlm_review", "distillation.teacher.freeze",
                "distillation.student.decoder_upsample", "distillation.training.scheduler", "hardware.target"):
        assert key in warned
    # keys training read before issue 14 (a run's old config.yaml) are dropped the same way
    _edit(root / "project.yaml", "distillation.training.num_workers", 2)
    _edit(root / "project.yaml", "distillation.training.augment", {"hflip": 0.5, "noise": 0.1})
    cfg = config_mod.load(root / "project.yaml")
    assert "num_workers" not in cfg["distillation"]["training"]
    assert cfg["distillation"]["training"]["augment"] == {"noise": 0.1}


def test_schema_defaults_are_init_and_training_defaults() -> None:
    from inference.training.settings import EXTRA_DEFAULTS

    full = schema.ProjectSettings().model_dump()

    def leaves(d: dict[str, Any], base: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
        out = []
        for k, v in d.items():
            out.extend(leaves(v, (*base, k)) if isinstance(v, dict) and v else [((*base, k), v)])
        return out

    for path, value in leaves(config_mod.DEFAULTS) + leaves(EXTRA_DEFAULTS):
        if path[0] == "weights":
            continue  # validated by review.weights
        node: Any = full
        for part in path:
            node = node[part]
        assert node == value, ".".join(path)
    for dotted in schema.DEPRECATED_KEYS:  # removed from what init writes and what training adds
        for defaults in (config_mod.DEFAULTS, EXTRA_DEFAULTS):
            node = defaults
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.get(part) or {}
            assert leaf not in node, dotted


def test_schema_covers_the_settings_classes_that_read_them() -> None:
    from inference.student import StudentConfig
    from review.judge import JudgeSettings

    assert {f.name for f in dataclasses.fields(JudgeSettings)} == set(schema.JudgeSettingsSchema.model_fields)
    assert {f.name for f in dataclasses.fields(StudentConfig)} == set(schema.StudentSettings.model_fields)


def test_train_config_overlay_is_checked_against_the_schema(tmp_path: Path) -> None:
    from inference.training.settings import resolve

    base = config_mod.deep_merge(config_mod.DEFAULTS, {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {batch_sise: 4}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        resolve(base, bad)
    assert str(exc.value) == f"{bad}: unknown key training.batch_sise (did you mean training.batch_size?)"
    bad.write_text("distillation: {loss: {temperature: warm}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"distillation\.loss\.temperature must be a number, got 'warm'"):
        resolve(base, bad)
    good = tmp_path / "good.yaml"
    good.write_text("training: {lr: 1e-4, scheduler: cosine_annealing}\nstudent: {mask_stride: 8}\n", encoding="utf-8")
    dist = resolve(base, good)
    assert dist["training"]["lr"] == pytest.approx(1e-4) and dist["student"]["mask_stride"] == 8
    assert "scheduler" not in dist["training"] and dist["training"]["batch_size"] == 32


def test_cli_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    path = _init(tmp_path / "p")
    _edit(path, "distillation.training.lr", "banana")
    proc = subprocess.run([sys.executable, "main.py", "export-labels", "--project", str(tmp_path / "p")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {path}: distillation.training.lr must be a number, got 'banana'"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_cli_train_config_overlay_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _init(tmp_path / "p")
    capsys.readouterr()
    overlay = tmp_path / "o.yaml"
    overlay.write_text("training: {epochs: lots}\n", encoding="utf-8")
    assert main(["train", "--project", str(tmp_path / "p"), "--config", str(overlay), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {overlay}: training.epochs must be an integer, got 'lots'"


def test_gui_shows_the_error_and_keeps_the_project_in_recent(qtbot: Any, tmp_path: Path) -> None:
    from app.settings import Settings
    from app.window_main import MainWindow

    path = _init(tmp_path / "p")
    win = MainWindow(Settings(), dialogs=False)
    qtbot.addWidget(win)
    assert win.open_project(tmp_path / "p")
    _edit(path, "distillation.training.batch_sise", 16)
    assert not win.open_project(tmp_path / "p")
    shown = win.statusBar().currentMessage()
    assert "unknown key distillation.training.batch_sise (did you mean distillation.training.batch_size?)" in shown
    assert str((tmp_path / "p").resolve()) in win.settings.recent_projects()  # fixed, it reopens from the list
