"""One base for every error the library reports to a user, with the exit code of its kind.

Commands catch :class:`MTCNNError`, print ``error: <message>`` (one line, naming the file or key
at fault) and exit with :attr:`MTCNNError.exit_code`:

* 2 — usage: a bad argument, config key or value (:class:`UsageError`, ``ConfigError``), a
  device this machine lacks (:class:`DeviceError`), an output path that cannot be written
  (:class:`OutputPathError`);
* 1 — input / data: a file that is missing, unreadable or malformed (:class:`InputError`:
  images, annotations, sample files, weights), or a job that cannot proceed on its data;
* 130 — interrupted (Ctrl-C), handled by the command runner, not an exception class here.

Each concrete error also keeps the builtin base it always had (``ValueError``, ``OSError`` ...)
so existing ``except ValueError`` callers keep working.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class MTCNNError(Exception):
    """Base of every error meant for the user; ``str(e)`` is one line."""

    exit_code: int = EXIT_INPUT


class UsageError(MTCNNError):
    """The command line or a config is wrong (unknown key, value out of range, bad combination)."""

    exit_code = EXIT_USAGE


class InputError(MTCNNError):
    """A file the job needs is missing, unreadable or malformed."""

    exit_code = EXIT_INPUT


class DataError(InputError):
    """The data are readable but cannot be used (no samples of a needed kind, nothing to resume)."""


class OutputExistsError(UsageError, FileExistsError):
    """A complete output is already there and the command was not told to replace it."""


class DeviceError(UsageError, ValueError):
    """The device asked for (``--device``, ``device=``) does not exist on this machine."""


class OutputPathError(UsageError, ValueError):
    """An output path (``--json``, ``--save-dir``) that cannot be written, found before any work."""


def exit_code_of(error: BaseException) -> int:
    return error.exit_code if isinstance(error, MTCNNError) else EXIT_INPUT


__all__ = ["DataError", "DeviceError", "EXIT_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "InputError",
           "MTCNNError", "OutputExistsError", "OutputPathError", "UsageError", "exit_code_of"]
