"""The errors volinit reports, and the exit code each one maps to.

Every failure a user can cause is one of these; `cli.main` turns it into one line on
stderr, `volinit: error: <what> <where>: <why> (<fix>)`, and its exit code. Anything else
escaping is a bug and gets a traceback with exit 3.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

EXIT_OK = 0
EXIT_FAILED = 1  # something could not be done, or doctor found problems
EXIT_USAGE = 2  # bad flags or a bad spec; nothing was touched
EXIT_BUG = 3
EXIT_INTERRUPTED = 130


class VolinitError(Exception):
    """A failure with a message fit for the user: what, where, why and the fix."""

    exit_code = EXIT_FAILED

    def __init__(self, what: str, where: str = "", why: str = "", fix: str = "") -> None:
        self.what, self.where, self.why, self.fix = what, where, why, fix
        super().__init__(self.line())

    def line(self) -> str:
        text = self.what
        if self.where:
            text += f" {self.where}"
        if self.why:
            text += f": {self.why}"
        if self.fix:
            text += f" ({self.fix})"
        return one_line(text)


def one_line(text: str) -> str:
    """text with every unprintable character escaped: a name with a newline, a carriage
    return or a terminal escape must not forge or hide a log line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class UsageError(VolinitError):
    """Bad flags or arguments."""

    exit_code = EXIT_USAGE


class SpecError(UsageError):
    """A spec that cannot be applied; `where` is the key path, e.g. volumes./data.mode."""

    def __init__(self, key: str, why: str, fix: str = "") -> None:
        super().__init__("spec", f"at {key}" if key else "", why, fix)
        self.key = key


@contextmanager
def flag_errors() -> Iterator[None]:
    """Flags parsed with the spec's parsers: a SpecError inside is said of the flag or
    argument it names (`--older-than: ...`, `DIR: ...`), not as `spec at --older-than`."""
    try:
        yield
    except SpecError as exc:
        raise UsageError(exc.key, "", exc.why, exc.fix) from None


class OperationError(VolinitError):
    """Something on disk could not be done (missing path, EROFS, EPERM, ...)."""
