"""Packaged resources: prompt templates, icons, demo models and their model cards."""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
