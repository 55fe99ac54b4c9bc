"""Workbench settings: an INI file under app.paths.config_dir() through QSettings.

Every setter writes through at once (QSettings.sync), so a killed workbench keeps the layout, colours and the
project it had open. Keys are grouped: window/*, projects/*, view/*, review/*.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from app.paths import config_dir
from widgets.palette import OKABE_ITO_LAYERS

MAX_RECENT = 10

DEFAULT_COLOURS = OKABE_ITO_LAYERS


def settings_path() -> Path:
    return config_dir() / "maskbench.ini"


class Settings:
    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else settings_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.qs = QSettings(str(self.path), QSettings.Format.IniFormat)

    # generic -----------------------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self.qs.value(key, default)

    def set(self, key: str, value: Any) -> None:
        self.qs.setValue(key, value)
        self.qs.sync()

    def get_bool(self, key: str, default: bool) -> bool:
        v = self.qs.value(key, default)
        if isinstance(v, str):
            return v.lower() in ("1", "true", "yes", "on")
        return bool(v)

    def get_float(self, key: str, default: float) -> float:
        try:
            return float(self.qs.value(key, default))
        except (TypeError, ValueError):
            return default

    def get_int(self, key: str, default: int) -> int:
        try:
            return int(self.qs.value(key, default))
        except (TypeError, ValueError):
            return default

    def _list(self, key: str) -> list[str]:
        v = self.qs.value(key, [])
        if v is None:
            return []
        if isinstance(v, str):  # INI stores a one-element list as a plain string
            return [v] if v else []
        return [str(x) for x in v]

    # projects ----------------------------------------------------------------------------------------------
    def recent_projects(self) -> list[str]:
        return self._list("projects/recent")

    def add_recent_project(self, path: str | Path) -> None:
        p = str(Path(path).expanduser().resolve())
        items = [x for x in self.recent_projects() if x != p]
        items.insert(0, p)
        self.qs.setValue("projects/recent", items[:MAX_RECENT])
        self.qs.setValue("projects/last", p)
        self.qs.sync()

    def remove_recent_project(self, path: str | Path) -> None:
        p = str(Path(path).expanduser().resolve())
        self.qs.setValue("projects/recent", [x for x in self.recent_projects() if x != p])
        if self.last_project() == p:
            self.qs.remove("projects/last")
        self.qs.sync()

    def last_project(self) -> str | None:
        v = self.qs.value("projects/last", None)
        return str(v) if v else None

    # colours -----------------------------------------------------------------------------------------------
    def colours(self) -> dict[str, str]:
        return {k: str(self.qs.value(f"view/colour_{k}", v)) for k, v in DEFAULT_COLOURS.items()}

    def set_colour(self, layer: str, hex_colour: str) -> None:
        self.set(f"view/colour_{layer}", hex_colour)

    # window ------------------------------------------------------------------------------------------------
    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        g = self.qs.value("window/geometry", None)
        s = self.qs.value("window/state", None)
        return (g if isinstance(g, QByteArray) else None, s if isinstance(s, QByteArray) else None)

    def save_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qs.setValue("window/geometry", geometry)
        self.qs.setValue("window/state", state)
        self.qs.sync()

    # review ------------------------------------------------------------------------------------------------
    def reviewer(self) -> str:
        v = self.qs.value("review/reviewer", "")
        if v:
            return str(v)
        try:
            return getpass.getuser() or "reviewer"
        except Exception:  # noqa: BLE001 - no login name in some containers
            return "reviewer"
