"""Does a caller's text look like personal data? PM must never receive any (DESIGN.md §1): users are
integer ids, payees are the Auth Center's opaque tokens. No I/O; the gateway refuses what this finds
with 422 PII_REFUSED, wherever a tag or a destination_ref appears (POST /intents, POST /quote, limit
rules), and in a fee rule's name and the free text of its expressions (gateway/models.py `NoPii`).

    pii_kind("0812345678")        # PiiKind.PHONE
    pii_kind("kyc_verified")      # None

What counts (each a `PiiKind`; the lists are the contract, tests/unit/test_pii.py holds the table):
- PHONE: a Thai number in any usual spelling: domestic `0` + 8 or 9 digits (`0812345678`, `02-123-4567`,
  `081 234 5678`, `(02) 123 4567`), international `+66` / `66` / `0066` + 8 or 9 digits, with or
  without the trunk `(0)` (`+66812345678`, `+66 (0)81 234 5678`); and any `+` followed by 8 to 15 digits
  (E.164: a foreign phone).
- NATIONAL_ID: 13 digits at once or grouped as on the card (`1234567890123`, `1-2345-67890-12-3`,
  `1 2345 67890 12 3`). Every such number is refused, checksum or not: a mistyped id is still an id.
- EMAIL: `local@domain.tld`.
- LABEL: a personal-data label as the word before `:` or `=` (`name:`, `first_name=`, `Phone:`,
  `kyc:name:`, `first name:`), one of PII_LABELS, compared without case and without `_ - . `
  (`First-Name:` is `firstname`).

A number is digits joined by at most three of ` ( ) . - /` between groups; any run of its groups is
checked, so `ref-2026-0812345678` is refused for its last group (national ids only in their two shapes).
Digits glued to a letter are part of an opaque token (`dst_9f8a0812345678`), not a number, and are not
checked. So machine words pass: `kyc_verified`, `risk:low`, `tier:2`, `campaign:2026-12`,
`email_verified`, `v1.2.3`, UUIDs (their groups of 8-4-4-4-12 never join to 9, 10 or 13 digits).
"""

from __future__ import annotations

import enum
import re

# Longer text is cut here before checking: every field this guards is far shorter (tags 256, tokens 128).
TEXT_LENGTH_CHECKED_MAX = 4_096
# The longest digit string worth joining: E.164 allows 15.
_DIGITS_JOINED_MAX = 15
# A national id as written: 13 digits at once, or grouped 1-4-5-2-1 as on the card. (Any 13 digits joined
# from other groups would refuse a date and a serial, `2026-12-31-00001`.)
_NATIONAL_ID_SHAPES = ([13], [1, 4, 5, 2, 1])

# Normalized: lower case, without `_`, `-`, `.` and spaces.
PII_LABELS = frozenset(
    {
        # names
        "name", "firstname", "lastname", "middlename", "fullname", "givenname", "familyname", "surname",
        "nickname", "username",
        # contact
        "phone", "phonenumber", "phoneno", "tel", "telephone", "mobile", "msisdn", "email", "emailaddress",
        # documents
        "idcard", "nationalid", "citizenid", "thaiid", "idnumber", "passport", "passportno", "passportnumber",
        "taxid",
        # the rest of a person
        "address", "dob", "dateofbirth", "birthdate", "birthday", "bankaccount", "accountnumber", "accountno",
        "cardnumber",
    }
)  # fmt: skip


class PiiKind(enum.StrEnum):
    PHONE = "a phone number"
    NATIONAL_ID = "a national id number"
    EMAIL = "an e-mail address"
    LABEL = "a personal-data label"


# Digits and separators are disjoint, so the pattern cannot backtrack more than linearly.
_NUMBER = re.compile(r"\+?[0-9]+(?:[ ().\-/]{1,3}[0-9]+)*")
_DIGITS = re.compile(r"[0-9]+")
_LABEL_SEPARATORS = re.compile(r"[:=]")
_LABEL_NOISE = re.compile(r"[_\-. ]")
_LAST_WORD = re.compile(r"[A-Za-z0-9_.\-]+$")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~.-")
_EMAIL_DOMAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


def pii_kind(text: str) -> PiiKind | None:
    """The kind of personal data `text` looks like, or None. Never raises; pure."""
    text = text[:TEXT_LENGTH_CHECKED_MAX]
    if _has_label(text):
        return PiiKind.LABEL
    if _has_email(text):
        return PiiKind.EMAIL
    return _number_kind(text)


def _has_label(text: str) -> bool:
    segments = _LABEL_SEPARATORS.split(text)
    # Every segment but the last stands before a separator; its last word is what labels the value
    # (`name:`, `"name:` in a quoted literal, `first name:` in free text).
    for segment in segments[:-1]:
        word = _LAST_WORD.search(segment.rstrip())
        if word is not None and _LABEL_NOISE.sub("", word.group()).lower() in PII_LABELS:
            return True
    return False


def _has_email(text: str) -> bool:
    for at in (index for index, character in enumerate(text) if character == "@"):
        local_start = at
        while local_start > 0 and text[local_start - 1] in _EMAIL_LOCAL:
            local_start -= 1
        domain_end = at + 1
        while domain_end < len(text) and text[domain_end] in _EMAIL_DOMAIN:
            domain_end += 1
        labels = text[at + 1 : domain_end].strip(".-").split(".")
        if local_start < at and len(labels) >= 2 and all(labels) and _is_top_level(labels[-1]):
            return True
    return False


def _is_top_level(label: str) -> bool:
    return len(label) >= 2 and label.isascii() and label.isalpha()


def _number_kind(text: str) -> PiiKind | None:
    for match in _NUMBER.finditer(text):
        groups = _DIGITS.findall(match.group())
        plus = match.group().startswith("+")
        first = 1 if match.start() > 0 and text[match.start() - 1].isalnum() else 0
        last = len(groups) - 1 if match.end() < len(text) and text[match.end()].isalnum() else len(groups)
        for start in range(first, last):
            digits, lengths = "", []
            for group in groups[start:last]:
                digits += group
                lengths.append(len(group))
                if len(digits) > _DIGITS_JOINED_MAX:
                    break
                if _is_phone(digits, plus and start == 0):
                    return PiiKind.PHONE
                if lengths in _NATIONAL_ID_SHAPES:
                    return PiiKind.NATIONAL_ID
    return None


def _is_phone(digits: str, plus: bool) -> bool:
    if plus:
        # Every Thai form (+66 and 8 or 9 digits, perhaps "(0)" between) is in E.164's range.
        return 8 <= len(digits) <= _DIGITS_JOINED_MAX
    if digits.startswith("0066"):
        return _thai_national_number(digits[4:])
    if digits.startswith("66") and len(digits) in (10, 11, 12):
        return _thai_national_number(digits[2:])
    return digits.startswith("0") and not digits.startswith("00") and len(digits) in (9, 10)


def _thai_national_number(digits: str) -> bool:
    """After the country code: 8 digits (a landline) or 9 (a mobile), perhaps behind the trunk `0`."""
    digits = digits.removeprefix("0")
    return len(digits) in (8, 9) and not digits.startswith("0")
