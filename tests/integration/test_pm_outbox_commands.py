"""`pm merchants webhook set`, `pm outbox list`, `pm outbox retry` and `pm review list`, run as the
installed commands against a real database: the secret is shown once and stored, rows are listed with
their kind and delivery, a retry makes a given-up row due again (and an unknown one exits 1), a review
flag is listed; bad input exits 1 with nothing written. A webhook URL on an internal address (loopback,
link-local, a name resolving to loopback) or with credentials is refused with one line and nothing
stored, unless PM_WEBHOOK_ALLOWED_HOSTS allows it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import asyncpg
from test_outbox import settled_charge
from test_pm_rules_command import PM, pm

from pm.store import reviews
from pm.store.migrate import migrate


async def test_outbox_and_review_commands(fresh_database) -> None:
    url = await fresh_database()
    await migrate(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        done = await asyncio.to_thread(
            pm, "merchants", "webhook", "set", "501", "https://93.184.215.14/hook", database_url=url
        )
        assert done.returncode == 0, done.stderr
        secret = done.stdout.split("signing secret (shown once): ")[1].strip()
        stored = await pool.fetchrow("SELECT url, secret FROM pm.merchant_webhook WHERE merchant_id = 501")
        assert (stored["url"], stored["secret"]) == ("https://93.184.215.14/hook", secret)
        refused = await asyncio.to_thread(pm, "merchants", "webhook", "set", "502", "ftp://x", database_url=url)
        assert refused.returncode == 1 and "http(s)://" in refused.stderr
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


def pm_with(environment: dict[str, str], *arguments: str, database_url: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    clean |= {"PM_DATABASE_URL": database_url, **environment}
    return subprocess.run([PM, *arguments], env=clean, capture_output=True, text=True, timeout=120)


async def test_webhook_set_refuses_internal_receivers_unless_allowed(fresh_database) -> None:
    url = await fresh_database()
    await migrate(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        for merchant, target, reason in [
            ("601", "http://127.0.0.1:8999/hook", "127.0.0.1 is loopback"),
            ("602", "http://localhost:8999/hook", "localhost resolves to"),
            ("603", "http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
            ("604", "http://10.1.2.3/hook", "10.1.2.3 is private"),
            ("605", "https://user:secret@93.184.215.14/hook", "user name or password"),
            ("606", "http://127.1:8999/hook", "not a canonical IP address"),
        ]:
            arguments = ("merchants", "webhook", "set", merchant, target)
            refused = await asyncio.to_thread(pm_with, {}, *arguments, database_url=url)
            assert refused.returncode == 1, (target, refused.stdout, refused.stderr)
            (line,) = refused.stderr.strip().splitlines()
            assert line.startswith("pm: webhook URL refused: ") and reason in line, line
            assert "signing secret" not in refused.stdout
        assert await pool.fetchval("SELECT count(*) FROM pm.merchant_webhook") == 0

        # The tests' receiver on loopback, allowed explicitly.
        allowed = {"PM_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
        done = await asyncio.to_thread(
            pm_with, allowed, "merchants", "webhook", "set", "601", "http://127.0.0.1:8999/hook", database_url=url
        )
        assert done.returncode == 0, done.stderr
        assert await pool.fetchval("SELECT url FROM pm.merchant_webhook WHERE merchant_id = 601") == (
            "http://127.0.0.1:8999/hook"
        )
        # A bad allowance is bad configuration (exit 2), not a silent "allow nothing".
        bad = await asyncio.to_thread(
            pm_with, {"PM_WEBHOOK_ALLOWED_HOSTS": "http://x/"}, "merchants", "webhook", "set", "607",
            "http://127.0.0.1:8999/hook", database_url=url,
        )  # fmt: skip
        assert bad.returncode == 2 and "PM_WEBHOOK_ALLOWED_HOSTS" in bad.stderr, bad.stderr
    finally:
        await pool.close()
