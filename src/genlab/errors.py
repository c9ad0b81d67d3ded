"""Error types. A `GenlabError` is the user's to fix: the CLI prints its one-line message
(what is wrong, the value received, the fix) and exits with code 2, never a traceback.
`GuardAbort` is not a user error: the stability guard gave up on a run (exit code 3)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USER_ERROR = 2
EXIT_GUARD_ABORT = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class GenlabError(Exception):
    """Base for errors the user can fix; the message names the problem, the value and the fix."""

    exit_code = EXIT_USER_ERROR


class ConfigError(GenlabError):
    """The config (YAML file or key=value overrides) is invalid."""


class DataError(GenlabError):
    """The data source is missing, unreadable, empty or malformed."""


class CheckpointError(GenlabError):
    """A checkpoint or run directory is missing, incomplete or incompatible."""


class DiskFullError(CheckpointError):
    """A checkpoint could not be written for lack of space; the previous one is kept."""


class RunDirError(GenlabError):
    """The run directory cannot be used (exists and is not empty, is not a run, ...)."""


class MissingDependencyError(GenlabError):
    """An optional dependency is not installed; the message gives the pip command."""


class GuardAbort(Exception):
    """The stability guard stopped training; `diagnosis` says what happened and what to try."""

    exit_code = EXIT_GUARD_ABORT

    def __init__(self, diagnosis: str):
        super().__init__(diagnosis)
        self.diagnosis = diagnosis


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for a
    one-line error that quotes what a library said."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Loggers of libraries that talk about themselves while an optional dependency imports: torchao
# (pulled in by peft) warns about every GPU kernel library it cannot load, and torch's pytree
# about torchao's deprecated Enum registrations. Neither concerns a user's run; they are raised
# to ERROR for the duration of the import.
QUIET_ON_IMPORT = ("torchao", "torch.utils._pytree")


def require(module: str, extra: str, *, load: bool = True):
    """Import an optional dependency lazily, or raise a clear install hint.

    `extra` is the genlab extra that provides it, e.g. require("optuna", "tune"). With
    `load=False` only check that it is installed (no import; returns None): a command can
    refuse early without paying for an import another thread will do.
    """
    import importlib
    import importlib.util
    import logging

    loggers = [logging.getLogger(name) for name in QUIET_ON_IMPORT]
    levels = [logger.level for logger in loggers]
    try:
        if not load:
            if importlib.util.find_spec(module) is None:
                raise ImportError(module)
            return None
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"optional dependency '{module}' is not installed (needed here); "
            f"install it with: pip install 'genlab[{extra}]'"
        ) from exc
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint; the message names it
    and gives the exact command that continues the run. A KeyboardInterrupt, so code that
    handles Ctrl-C (the tuner) treats it as one."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
