"""The one exception type whose message is written for users; the CLI and GUI show it as one line."""


class UserError(Exception):
    pass
