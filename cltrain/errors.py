"""Errors that the CLI turns into one clear line and an exit code (see DESIGN.md, "Exit codes")."""


class CltrainError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class ConfigError(CltrainError):
    """A bad key or value in the experiment config or on the command line (exit 2)."""

    exit_code = 2


class DataMissingError(CltrainError):
    """A dataset is not where the data root says, and it could not be downloaded (exit 2: `data.root` is config)."""

    exit_code = 2
