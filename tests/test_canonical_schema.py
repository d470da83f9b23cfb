"""docs/schema.txt is what migrate makes: the suite's migrated database, described, is the
committed text, on every server the suite runs on; a difference fails with a unified diff."""

from __future__ import annotations

import psycopg
import pytest

from canonical_schema import REGENERATE, describe, mismatch

pytestmark = pytest.mark.schema


def test_the_committed_schema_is_the_migrated_database(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        message = mismatch(describe(conn))
    if message:
        pytest.fail(message, pytrace=False)


def test_a_drift_fails_with_a_diff_that_names_it(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.leads ADD COLUMN added_by_hand text")
        conn.execute("CREATE INDEX leads_added_by_hand_idx ON public.leads (added_by_hand)")
        message = mismatch(describe(conn))
    assert message is not None
    added = [line for line in message.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert added == ["+    added_by_hand text",
                     "+    CREATE INDEX leads_added_by_hand_idx ON public.leads USING btree (added_by_hand)"], message
    assert message.rstrip().endswith(REGENERATE)
