"""Errors the user can fix: the CLI prints them as one line on stderr and exits 2."""


class UserError(Exception):
    """Bad input (config, data, paths). The message names the problem and the fix."""


class ConfigError(UserError):
    """A config file or override is malformed, unknown, mistyped or out of range."""


class DataError(UserError):
    """A dataset is missing, malformed, or a split cannot be built from it."""


class RunDirError(UserError):
    """A run directory is missing, not a run dir, or would be overwritten."""


class WriteError(UserError):
    """A file of a run (or a cache) cannot be written: disk full, permission denied, read-only file system."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/Inf; the run stops and keeps its last good checkpoint."""


class ConfigWarning(UserWarning):
    """A config knob that does nothing in this combination; the run goes on (the CLI prints one line)."""
