"""The one exception type whose message is written for users; the CLI and GUI show it as one line."""


class UserError(Exception):
    pass


class ConfigError(UserError):
    """A settings file (project.yaml, a `train --config` overlay) that does not load or does not fit the schema
    (store.settings_schema): one line naming the file and the key."""
