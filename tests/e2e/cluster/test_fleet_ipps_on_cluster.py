"""tests/e2e/test_fleet_ipps.py's tests, unchanged, on the Valkey Cluster of this directory's conftest."""

from tests.e2e.test_fleet_ipps import *  # noqa: F403 (the tests and their fixtures, collected here again)
