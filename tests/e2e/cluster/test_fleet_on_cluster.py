"""tests/e2e/test_fleet.py's tests, unchanged, on the Valkey Cluster of this directory's conftest."""

from tests.e2e.test_fleet import *  # noqa: F403 (the tests and their fixtures, collected here again)
