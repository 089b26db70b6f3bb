"""Proves what pm.domain.pii.pii_kind calls personal data, as a table: Thai phone numbers in their usual
spellings, 13-digit national ids, e-mail addresses and personal-data labels are found (with their
kind); machine words, opaque tokens, dates, versions and UUIDs pass."""

from __future__ import annotations

import random
import re
import uuid
from pathlib import Path

import pytest

from pm.domain.pii import PII_LABELS, TEXT_LENGTH_CHECKED_MAX, PiiKind, pii_kind

PHONE, NATIONAL_ID, EMAIL, LABEL = PiiKind.PHONE, PiiKind.NATIONAL_ID, PiiKind.EMAIL, PiiKind.LABEL

REFUSED = [
    # Thai mobile and landline numbers, domestic
    ("0812345678", PHONE),
    ("081-234-5678", PHONE),
    ("081 234 5678", PHONE),
    ("081.234.5678", PHONE),
    ("021234567", PHONE),
    ("02-123-4567", PHONE),
    ("(02) 123 4567", PHONE),
    ("053-123-456", PHONE),
    # international
    ("+66812345678", PHONE),
    ("+66 81 234 5678", PHONE),
    ("+66-2-123-4567", PHONE),
    ("+66 (0)81 234 5678", PHONE),
    ("66812345678", PHONE),
    ("0066812345678", PHONE),
    ("+14155552671", PHONE),  # any E.164 number
    # inside a machine-looking word, where a separator sets it apart
    ("ref_0812345678", PHONE),
    ("user:0812345678", PHONE),
    ("ref-2026-0812345678", PHONE),
    ("0812345678_x", PHONE),
    # national ids
    ("1234567890123", NATIONAL_ID),
    ("1-2345-67890-12-3", NATIONAL_ID),
    ("1 2345 67890 12 3", NATIONAL_ID),
    ("id-3100600123456", NATIONAL_ID),
    # e-mail addresses
    ("a@b.co", EMAIL),
    ("somchai.j@example.co.th", EMAIL),
    ("x+tag@mail.example.com", EMAIL),
    ("contact:a@b.co", EMAIL),
    ("email:a@b.co", LABEL),  # the label is found first; refused either way
    # labels
    ("name:Somchai", LABEL),
    ("first_name:Somchai", LABEL),
    ("First-Name=Somchai", LABEL),
    ("surname:Jaidee", LABEL),
    ("phone:unknown", LABEL),
    ("email:x", LABEL),
    ("id_card:abc", LABEL),
    ("passport:AA1234567", LABEL),
    ("kyc:name:x", LABEL),
    ("'name:Somchai'", LABEL),  # as a quoted CEL literal
    ("first name: Somchai", LABEL),  # as free text (a fee rule's name)
    ("Address:Bangkok", LABEL),
    ("dob:1990-01-01", LABEL),
]

PASSED = [
    "kyc_verified",
    "risk:low",
    "tier:2",
    "vip",
    "campaign:2026-12",
    "campaign:2026-12-31",
    "promo:2026-01-15-1030",
    "batch:2026-12-31-00001",  # a date and a serial: 13 digits, but not in an id's shape
    "1-1-1-1-1-1-1-1-1-1-1-1-1",
    "email_verified",  # a status, not a label before a value
    "phone_verified",
    "name",  # a word alone labels nothing
    "name_verified",
    "promo:name-change",  # the label is the word before the separator, not after
    "one percent, no floor",
    "v1.2.3",
    "1.20.300",
    "release:2026.01.15",
    "10.0.0.1",
    "192.168.100.200",
    "amount:100.00",
    "slot:0930-1730",
    "dst_9f8a0812345678cafe",  # digits glued to letters: part of an opaque token
    "tok9f8a1234567890123b",
    "demo-bank-token",
    "dst_b1946ac92492d2347c6235b4d2611184",
    "merchant:12345",
    "order:123456789",  # nine digits not starting with 0: not a Thai number
    "batch:12345678901",  # eleven digits not starting with 0 or 66
    "user@",  # no domain: not an address (the tag pattern refuses it anyway)
    "@handle",
    "a@b",
    "",
]


@pytest.mark.parametrize(("text", "kind"), REFUSED)
def test_personal_data_is_found_with_its_kind(text: str, kind: PiiKind) -> None:
    assert pii_kind(text) == kind


@pytest.mark.parametrize("text", PASSED)
def test_machine_words_and_opaque_tokens_pass(text: str) -> None:
    assert pii_kind(text) is None


def test_uuids_and_random_hex_tokens_pass() -> None:
    # Groups of 8-4-4-4-12 never join to 9, 10 or 13 digits, even when a UUID is all digits.
    generator = random.Random(10)
    for _ in range(2_000):
        assert pii_kind(str(uuid.UUID(int=generator.getrandbits(128)))) is None
    assert pii_kind("12345678-0123-4567-8901-234567890123") is None
    # In a hex token every digit run touches a letter or is the token's edge beside its prefix's letters.
    for _ in range(2_000):
        assert pii_kind(f"dst_{generator.getrandbits(128):032x}") is None


def test_every_label_is_found_in_its_usual_spellings() -> None:
    for label in PII_LABELS:
        assert pii_kind(f"{label}:x") == LABEL, label
        assert pii_kind(f"{label.upper()}=x") == LABEL, label
        assert pii_kind(label) is None, label  # alone, it labels nothing


def test_long_text_is_checked_up_to_its_bound_in_linear_time() -> None:
    assert pii_kind("1-" * 100_000) is None
    assert pii_kind("0-" * 100_000) is None
    assert pii_kind("x" * (TEXT_LENGTH_CHECKED_MAX - 20) + "_0812345678") == PHONE
    assert pii_kind("x" * TEXT_LENGTH_CHECKED_MAX + "_0812345678") is None  # past the bound: callers cap far below


def test_the_readme_table_says_what_the_code_does() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = [
        line.split(" | ")
        for line in readme.splitlines()
        if line.startswith(("| a phone", "| a national", "| an e-mail", "| a personal"))
    ]
    assert len(rows) == 4
    for kind, refused, passes in rows:
        examples = re.findall(r"`([^`]+)`", refused)
        if "label" not in kind:  # the label row lists labels, not examples
            for text in (e for e in examples if "…" not in e):
                assert pii_kind(text) is not None, text
        for text in re.findall(r"`([^`]+)`", passes):
            assert pii_kind(text) is None, text
