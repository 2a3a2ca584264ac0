"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""


class SashimiError(Exception):
    """Base class: bad input, bad configuration, bad file. The message names what and where."""


class ConfigError(SashimiError, ValueError):
    """A configuration value or argument is invalid."""


class CheckpointError(SashimiError):
    """A checkpoint or weight file cannot be read or does not match."""


class AudioError(SashimiError):
    """An audio file is unreadable, empty, or not what was expected."""


# What an OSError means to a user, and the first thing to do about it: (cause, fix), by errno.
def _os_faults() -> dict[int, tuple[str, str]]:
    import errno

    return {
        errno.ENOSPC: ("no space left on device", "free space"),
        errno.EDQUOT: ("disk quota exceeded", "free space"),
        errno.EFBIG: ("file too large for this process's file-size limit", "raise the limit (ulimit -f)"),
        errno.EROFS: ("read-only file system", "make the folder writable"),
        errno.EACCES: ("permission denied", "make the folder writable"),
        errno.EPERM: ("operation not permitted", "make the folder writable"),
        errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or lower trainer.num_workers"),
        errno.ENFILE: ("too many open files in the system", "close other programs"),
        errno.EIO: ("input/output error", "check the disk"),
        errno.EEXIST: ("a file is in the way of a folder", "move it away"),
        errno.ENOTDIR: ("a file is in the way of a folder", "move it away"),
    }


OS_FAULTS = _os_faults()
