"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""


class SashimiError(Exception):
    """Base class: bad input, bad configuration, bad file. The message names what and where."""


class ConfigError(SashimiError, ValueError):
    """A configuration value or argument is invalid."""


class CheckpointError(SashimiError):
    """A checkpoint or weight file cannot be read or does not match."""


class AudioError(SashimiError):
    """An audio file is unreadable, empty, or not what was expected."""
