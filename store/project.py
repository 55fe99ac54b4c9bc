"""A project is a folder: project.yaml, maskbench.sqlite, and working folders for caches, runs and exports."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from store import config as config_mod
from store import integrity, settings_schema
from store.db import Database, sqlite_path
from store.errors import UserError

CONFIG_NAME = "project.yaml"
DB_NAME = "maskbench.sqlite"
log = logging.getLogger("maskbench.store")


class ProjectError(UserError):
    pass


class ProjectConfigError(ProjectError, config_mod.ConfigError):
    """project.yaml does not load or does not fit the schema (store.settings_schema): one line, file and key."""


class Project:
    def __init__(self, root: Path, cfg: dict[str, Any], db: Database) -> None:
        self.root = root
        self.config = cfg
        self.db = db

    # Folders the domain code writes to; created lazily so a read-only look at a project creates nothing.
    @property
    def cache_dir(self) -> Path:
        return self._dir("cache")

    @property
    def runs_dir(self) -> Path:
        return self._dir("runs")

    @property
    def exports_dir(self) -> Path:
        return self._dir("exports")

    @property
    def models_dir(self) -> Path:
        return self._dir("models")

    def _dir(self, name: str) -> Path:
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    def save_config(self) -> None:
        config_mod.save(self.config_path, self.config)

    @classmethod
    def database_url(cls, root: Path, cfg: dict[str, Any]) -> str:
        return cfg.get("database_url") or f"sqlite:///{(root / DB_NAME).resolve()}"

    @classmethod
    def create(cls, root: Path | str, name: str | None = None, overrides: dict[str, Any] | None = None) -> Project:
        root = Path(root).expanduser().resolve()
        if (root / CONFIG_NAME).exists():
            return cls.open(root)
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root} exists and is not a folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"cannot create project folder {root}: {exc.strerror}") from None
        cfg = config_mod.deep_merge(config_mod.DEFAULTS, overrides or {})
        cfg["name"] = name or root.name
        cfg, _ = settings_schema.strip_deprecated(cfg)
        try:  # refuse bad overrides before writing a project.yaml that would not open
            settings_schema.validate_project(cfg, str(root / CONFIG_NAME))
        except config_mod.ConfigError as exc:
            raise ProjectConfigError(str(exc)) from None
        config_mod.save(root / CONFIG_NAME, cfg)
        return cls.open(root, scheduled_backup=False)  # nothing to keep yet

    @classmethod
    def open(cls, root: Path | str, create: bool = False, scheduled_backup: bool = True) -> Project:
        root = Path(root).expanduser().resolve()
        cfg_path = root / CONFIG_NAME
        if not cfg_path.exists():
            if create:
                return cls.create(root)
            raise ProjectError(f"{root} is not a maskbench project (no {CONFIG_NAME}); create it with 'maskbench init'")
        try:
            cfg = config_mod.load(cfg_path)
        except config_mod.ConfigError as exc:
            raise ProjectConfigError(str(exc)) from None
        url = cls.database_url(root, cfg)
        db = Database(url)
        store = sqlite_path(url)
        plan = cfg.get("backup") or {}
        if scheduled_backup and store is not None and integrity.due(store, float(plan.get("every_hours", 0))):
            try:
                integrity.backup(store)
                integrity.prune(store, int(plan.get("keep", 7)))
            except (OSError, sqlite3.Error) as exc:  # a read-only folder or a full disk must not stop the review
                log.warning("scheduled backup of %s failed: %s", store, exc)
        return cls(root, cfg, db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
