"""User folders (platformdirs), overridable by environment for tests and portable installs.

User data never goes inside the install folder: a station bundle may be read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_config_dir, user_data_dir


def data_dir() -> Path:
    return Path(os.environ.get("MASKBENCH_DATA_DIR") or user_data_dir("maskbench", appauthor=False))


def config_dir() -> Path:
    return Path(os.environ.get("MASKBENCH_CONFIG_DIR") or user_config_dir("maskbench", appauthor=False))
