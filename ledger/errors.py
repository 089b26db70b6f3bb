"""The ledger's exception tree; see `ledger/__init__.py` for when each is raised."""

import tigerbeetle as tb


class LedgerError(Exception):
    """Base of every error the ledger raises (result codes are returned, never raised)."""


class LedgerUrlError(LedgerError, ValueError):
    """The ledger URL is malformed or names an unknown scheme."""


class LedgerUnavailableError(LedgerError, ConnectionError):
    """The ledger's server could not be reached, or the connection broke mid-request."""


class TooMuchDataError(LedgerError, tb.TooMuchDataError):
    """A request carries more events than one TigerBeetle request may (8189); nothing was written.

    Also a `tigerbeetle.TooMuchDataError`, so code written for the official client catches it.
    """

    def __init__(self, message: str = "too much data in one request") -> None:
        Exception.__init__(self, message)
