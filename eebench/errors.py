"""User-facing errors: one line, what and where, how to fix; the CLI turns them into exit code 2."""


class UserError(Exception):
    """A problem with the user's input (recipe, data, CLI argument, model): never a traceback."""


class MissingData(UserError):
    """A split's data is not there (no file, no hub copy): sometimes only a warning (per-epoch dev)."""


class Busy(UserError):
    """Another process owns the run folder right now (exit code BUSY_EXIT)."""


BUSY_EXIT = 3
"""Exit code of a command that found its run being written by another process (with --if-missing:
that every run it left alone was, the others having finished): job launchers read it, not the log."""
