"""Money as PM counts it: integers in minor units, and the currencies the wallet holds. No I/O.

The ledger package keeps the same table as `ledger.accounts.CURRENCY_LEDGER` (it knows nothing of PM:
DESIGN.md §4, the layers test); a unit test holds the two equal.
"""

from __future__ import annotations

# ISO 4217 code -> numeric code (the TigerBeetle `ledger` of that currency's accounts).
CURRENCIES: dict[str, int] = {"THB": 764, "USD": 840, "EUR": 978}

# Amounts the limits stage checks: its Redis script compares in Lua numbers (doubles), exact only up to
# 2**53. 2**53 satang is 90 trillion THB, far above any cap or intent; the settings cap intents at it.
AMOUNT_MINOR_EXACT_MAX = 2**53 - 1
