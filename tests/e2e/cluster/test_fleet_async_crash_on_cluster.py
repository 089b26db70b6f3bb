"""tests/e2e/test_fleet_async_crash.py's tests, unchanged, on the Valkey Cluster of this directory's conftest."""

from tests.e2e.test_fleet_async_crash import *  # noqa: F403 (the tests and their fixtures, collected here again)
