"""How errors reach the user: the exception the CLI prints as one line, and the one way
any exception becomes one line without a password in it.

The passwords hidden are every one this process has read from a connection string
(deenroll.database hands them over) and PGPASSWORD, as written and percent-encoded.
"""

from __future__ import annotations

import os
from urllib.parse import quote

import psycopg

_MIN_SECRET = 4  # shorter secrets are not searched for in messages: they would mangle every word


class UserError(Exception):
    """A problem the user can act on: printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


_secrets: set[str] = set()


def remember_secret(value: str) -> None:
    """Hide `value` from every message redact() sees from now on."""
    _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every password this process knows of (its connection strings, PGPASSWORD) as ***,
    as written and percent-encoded, the longest first."""
    known = {*_secrets, os.environ.get("PGPASSWORD", "")}
    # PGPASSWORD may hold bytes that are not UTF-8 (surrogates in os.environ): quote them as bytes.
    encoded = {quote(s, safe=safe, errors="surrogateescape") for s in known for safe in ("", "/")}
    for secret in sorted({s for s in known | encoded if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def first_line(text: str) -> str:
    """The first line of `text` that is not blank, stripped ('' when there is none)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def flatten(text: str) -> str:
    """Every line of `text` that is not blank, its spaces collapsed, joined with '; '."""
    return "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def one_line(exc: BaseException, *, details: bool = False) -> str:
    """`exc` as one line without a known password.

    A database error says its primary message, any other exception its text: the first
    line that is not blank, else the exception's type name. With `details`, a database
    error's whole primary message is kept, followed by its detail in parentheses and
    its hint ("; hint: ...").
    """
    diag = exc.diag if isinstance(exc, psycopg.Error) else None
    if details and diag is not None and diag.message_primary:
        text = flatten(diag.message_primary)
        if diag.message_detail:
            text += f" ({flatten(diag.message_detail)})"
        if diag.message_hint:
            text += f"; hint: {flatten(diag.message_hint)}"
        return redact(text)
    message = (diag.message_primary if diag is not None else None) or str(exc)
    return redact(first_line(message) or type(exc).__name__)
