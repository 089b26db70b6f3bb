"""The ledger: TigerBeetle's client API over three interchangeable backends.

    async with open_ledger("memory://") as ledger:          # in-process, for unit tests
    async with open_ledger("postgresql://…") as ledger:     # TigerBeetle semantics on PostgreSQL
    async with open_ledger("tigerbeetle://3000?cluster=0") as ledger:  # the official client

Every backend takes and returns the `tigerbeetle` package's own classes and answers exactly as a
TigerBeetle 0.17 cluster does (one `CreateTransferResult` per event, status `CREATED` on success).

Exceptions (all subclass `LedgerError`):
    LedgerUrlError          the URL is malformed or names an unknown scheme
    LedgerUnavailableError  the server could not be reached or the connection broke
    TooMuchDataError        a request carries more than `BATCH_EVENTS_MAX` events (nothing is written)
"""

from ledger.accounts import ACCOUNT_NAMESPACE, AccountKind, NamedAccount, account_id, currency_ledger
from ledger.errors import LedgerError, LedgerUnavailableError, LedgerUrlError, TooMuchDataError
from ledger.open import BATCH_EVENTS_MAX, Ledger, open_ledger

__all__ = [
    "ACCOUNT_NAMESPACE",
    "BATCH_EVENTS_MAX",
    "AccountKind",
    "Ledger",
    "LedgerError",
    "LedgerUnavailableError",
    "LedgerUrlError",
    "NamedAccount",
    "TooMuchDataError",
    "account_id",
    "currency_ledger",
    "open_ledger",
]
