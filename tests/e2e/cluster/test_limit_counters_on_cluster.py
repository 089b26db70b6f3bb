"""tests/integration/test_limit_counters.py's tests, unchanged, on the Valkey Cluster of this directory."""

from tests.integration.test_limit_counters import *  # noqa: F403 (the tests and the `store` fixture)
