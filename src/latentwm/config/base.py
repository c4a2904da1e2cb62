"""The config error type and the field checks every config section uses (one way to validate).

Checks are written so NaN fails them (`not v > 0` rather than `v <= 0`): a NaN learning rate is a bad config, not
a silently diverging run.
"""

from __future__ import annotations

import math


class LatentwmError(Exception):
    """Base of the errors a user can act on (bad config, damaged checkpoint or cache, a locked out dir, ...): the
    CLI prints their message as one line `latentwm <command>: <message>` (exit code 2) instead of a traceback."""


class ConfigError(LatentwmError):
    """A config value is out of range or inconsistent; the message names the field.

    Not a ValueError on purpose: tyro turns ValueErrors raised while it builds a config into its own multi-line
    box, which would hide the one-line message."""


def positive(obj, prefix: str, *names: str) -> None:
    """Each field is a number > 0 (NaN and None rejected)."""
    for n in names:
        v = getattr(obj, n)
        if v is None or not v > 0 or (isinstance(v, float) and math.isinf(v)):
            raise ConfigError(f"{prefix}.{n} must be > 0 and finite, got {v!r}")


def nonneg(obj, prefix: str, *names: str) -> None:
    """Each field is a finite number >= 0."""
    for n in names:
        v = getattr(obj, n)
        if not v >= 0 or (isinstance(v, float) and math.isinf(v)):
            raise ConfigError(f"{prefix}.{n} must be >= 0 and finite, got {v!r}")


def nonempty(obj, prefix: str, *names: str) -> None:
    """Each field is a non-blank string (an empty output folder would write into the current directory)."""
    for n in names:
        if not str(getattr(obj, n)).strip():
            raise ConfigError(f"{prefix}.{n} is empty: give a folder (the current directory is never assumed)")


def _unset_hint(name: str, meaning: str) -> str:
    return f"leave --{name.replace('_', '-')} out for {meaning}"


def positive_or_unset(obj, prefix: str, **unset: str) -> None:
    """Each field (a keyword) is None or a finite number > 0; the keyword's value says what None means (a given 0,
    which once meant that, is refused with the flag to leave out instead)."""
    for n, meaning in unset.items():
        v = getattr(obj, n)
        if v is not None and (not v > 0 or (isinstance(v, float) and math.isinf(v))):
            need = ">= 1" if isinstance(v, int) else "> 0 and finite"
            raise ConfigError(f"{prefix}.{n} must be {need}, got {v!r} ({_unset_hint(n, meaning)})")


def nonneg_or_unset(obj, prefix: str, **unset: str) -> None:
    """Each field (a keyword) is None or a finite number >= 0; the keyword's value says what None means."""
    for n, meaning in unset.items():
        v = getattr(obj, n)
        if v is not None and (not v >= 0 or (isinstance(v, float) and math.isinf(v))):
            need = ">= 0" if isinstance(v, int) else ">= 0 and finite"
            raise ConfigError(f"{prefix}.{n} must be {need}, got {v!r} ({_unset_hint(n, meaning)})")


def nonempty_or_unset(obj, prefix: str, **unset: str) -> None:
    """Each field (a keyword) is None or a non-blank string; the keyword's value says what None means."""
    for n, meaning in unset.items():
        v = getattr(obj, n)
        if v is not None and not str(v).strip():
            raise ConfigError(f"{prefix}.{n} is empty: give a value, or {_unset_hint(n, meaning)}")


def unit(obj, prefix: str, *names: str) -> None:
    """Each field lies in [0, 1]."""
    for n in names:
        v = getattr(obj, n)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{prefix}.{n} must be in [0, 1], got {v!r}")


def pow2(v: int) -> bool:
    return v > 0 and (v & (v - 1)) == 0


__all__ = [
    "ConfigError",
    "LatentwmError",
    "nonempty_or_unset",
    "nonneg",
    "nonneg_or_unset",
    "positive",
    "positive_or_unset",
    "pow2",
    "unit",
]
