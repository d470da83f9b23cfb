"""errors.one_line: any exception as one line, without a password this process knows of."""

from __future__ import annotations

import psycopg
import pytest

from deenroll.errors import one_line, redact, remember_secret


def test_the_first_line_that_is_not_blank() -> None:
    assert one_line(ValueError("\n  first words  \nsecond line")) == "first words"


def test_an_exception_that_says_nothing_is_its_type() -> None:
    assert one_line(KeyError()) == "KeyError"
    assert one_line(RuntimeError(" \n ")) == "RuntimeError"


def test_a_remembered_password_is_hidden_as_written_and_percent_encoded() -> None:
    remember_secret("Zq9/one-line-secret")
    assert one_line(RuntimeError("login Zq9/one-line-secret refused")) == "login *** refused"
    assert redact("url pw Zq9%2Fone-line-secret") == "url pw ***"


def test_a_database_error_says_its_primary_message(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT 1 / 0")
    assert one_line(caught.value) == "division by zero"


def test_with_details_a_database_error_adds_its_detail_and_hint(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION E'went\\n  wrong' USING DETAIL = 'the detail', HINT = 'try this'; END $$"
        )
    assert one_line(caught.value) == "went"
    assert one_line(caught.value, details=True) == "went; wrong (the detail); hint: try this"
