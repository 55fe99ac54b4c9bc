"""Logging to the user's log folder, so a user's one-line error always has the full story on disk."""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path

from platformdirs import user_log_dir

_configured = False


def log_dir() -> Path:
    return Path(os.environ.get("MASKBENCH_LOG_DIR") or user_log_dir("maskbench", appauthor=False))


def log_file() -> Path:
    return log_dir() / "maskbench.log"


def setup(level: int = logging.INFO) -> Path:
    global _configured
    path = log_file()
    if _configured:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"))
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(handler)
    # LiteLLM and httpx log request details at INFO; keep them out so nothing resembling a key reaches the file.
    for noisy in ("LiteLLM", "litellm", "httpx", "httpcore", "paramiko"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True
    return path
