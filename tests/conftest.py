"""Shared fixtures. Qt runs offscreen; real data comes from ../shared/datasets/magnetic-tile/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MASKBENCH_NO_KEYRING", "1")

REPO = Path(__file__).resolve().parents[1]
MAGNETIC_TILE = Path(os.environ.get("MASKBENCH_MAGNETIC_TILE", REPO.parent / "shared" / "datasets" / "magnetic-tile"))


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep logs, settings and user data of every test out of the real home folder."""
    base = tmp_path_factory.mktemp("userdirs")
    monkeypatch.setenv("MASKBENCH_LOG_DIR", str(base / "logs"))
    monkeypatch.setenv("MASKBENCH_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("MASKBENCH_CONFIG_DIR", str(base / "config"))


@pytest.fixture(scope="session")
def magnetic_tile_dir() -> Path:
    if not MAGNETIC_TILE.is_dir():
        pytest.fail(f"real data set missing at {MAGNETIC_TILE}")
    return MAGNETIC_TILE


@pytest.fixture(scope="session")
def magnetic_tile_pairs(magnetic_tile_dir: Path) -> list[tuple[Path, Path, str]]:
    """(image, mask, class) for every defect crop, sorted, so tests pick the same crops every run."""
    out = []
    for cls_dir in sorted(magnetic_tile_dir.iterdir()):
        if cls_dir.is_dir():
            for img in sorted(cls_dir.glob("*.jpg")):
                out.append((img, img.with_suffix(".png"), cls_dir.name))
    return out
