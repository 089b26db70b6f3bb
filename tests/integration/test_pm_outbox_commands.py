"""`pm merchants webhook set`, `pm outbox list`, `pm outbox retry` and `pm review list`, run as the
installed commands against a real database: the secret is shown once and stored, rows are listed with
their kind and delivery, a retry makes a given-up row due again (and an unknown one exits 1), a review
flag is listed; bad input exits 1 with nothing written."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from test_outbox import settled_charge
from test_pm_rules_command import pm

from pm import reviews
from pm.migrate import migrate


async def test_outbox_and_review_commands(fresh_database) -> None:
    url = await fresh_database()
    await migrate(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        done = await asyncio.to_thread(
            pm, "merchants", "webhook", "set", "501", "https://shop.example/hook", database_url=url
        )
        assert done.returncode == 0, done.stderr
        secret = done.stdout.split("signing secret (shown once): ")[1].strip()
        stored = await pool.fetchrow("SELECT url, secret FROM pm.merchant_webhook WHERE merchant_id = 501")
        assert (stored["url"], stored["secret"]) == ("https://shop.example/hook", secret)
        refused = await asyncio.to_thread(pm, "merchants", "webhook", "set", "502", "ftp://x", database_url=url)
        assert refused.returncode == 1 and "http(s) URL" in refused.stderr
        assert await pool.fetchval("SELECT count(*) FROM pm.merchant_webhook WHERE merchant_id = 502") == 0

        intent_id = await settled_charge(pool, 501)
        await reviews.flag(pool, [intent_id], "the PSP paid after we voided")
        listed = await asyncio.to_thread(pm, "outbox", "list", "--json", database_url=url)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert sorted((row["kind"], row["intent_id"]) for row in rows) == [
            ("merchant_webhook", str(intent_id)), ("review", str(intent_id)),
        ]  # fmt: skip
        webhook_row = next(row["id"] for row in rows if row["kind"] == "merchant_webhook")
        await pool.execute("UPDATE pm.outbox SET gave_up_at = now(), next_attempt_at = now() + interval '1 day'")
        text = await asyncio.to_thread(pm, "outbox", "list", "--undelivered", database_url=url)
        assert "GAVE UP" in text.stdout and "merchant=501" in text.stdout and " review " in text.stdout

        retried = await asyncio.to_thread(pm, "outbox", "retry", str(webhook_row), database_url=url)
        assert retried.returncode == 0 and f"outbox row {webhook_row} is due now" in retried.stdout
        row = await pool.fetchrow(
            "SELECT gave_up_at, next_attempt_at <= now() AS due FROM pm.outbox WHERE id = $1", webhook_row
        )
        assert row["gave_up_at"] is None and row["due"]
        unknown = await asyncio.to_thread(pm, "outbox", "retry", "999999", database_url=url)
        assert unknown.returncode == 1 and "no undelivered outbox row 999999" in unknown.stderr

        review = await asyncio.to_thread(pm, "review", "list", "--json", database_url=url)
        assert review.returncode == 0, review.stderr
        assert [(r["id"], r["review_reason"]) for r in json.loads(review.stdout)] == [
            (str(intent_id), "the PSP paid after we voided")
        ]
    finally:
        await pool.close()
