"""User-facing errors: one line that names the file, row or key; the CLI exits with code 2."""

from __future__ import annotations


class StarloopError(Exception):
    """An error caused by the user's input (data, config, paths). Printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it to one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))


class DataError(StarloopError):
    """Bad dataset input: names the file (and row) at fault."""

    def __init__(self, path: object, message: str, row: int | None = None):
        where = f"{path}" if row is None else f"{path}, row {row}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.row = row


class ConfigError(StarloopError):
    """Bad configuration: names the key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key '{key}': {message}")
        self.key = key
