"""Errors of the model layer that users see as one line (the CLI prints `error: <message>` and exits 1).

They subclass store.errors.UserError so the CLI, the GUI and the review code handle them without knowing this
package; tests match on the subclasses.
"""

from __future__ import annotations

from store.errors import UserError


class ModelError(UserError):
    """Anything wrong with a model the user asked for (missing, not active, wrong backend)."""


class CheckpointError(ModelError):
    """The file is not a loadable checkpoint at all (truncated, garbage, not a state dict)."""


class ModelMismatchError(ModelError):
    """The file loads but does not fit the architecture it was given as (wrong config, student given as teacher)."""


class NoActiveModel(ModelError):
    pass


class DownloadError(ModelError):
    """A download failed: offline, HTTP error, or the sha256 did not match."""
