"""Application wiring: the CLI, the main window, settings, background jobs."""
