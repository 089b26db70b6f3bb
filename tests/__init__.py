"""The test suite: unit (fakes), integration (real PostgreSQL and Valkey), e2e (the fleet as processes),
and the ledger conformance suite that runs against every backend. Helpers live in `tests.support`."""
