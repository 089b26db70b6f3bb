"""tests/integration/test_streams.py's tests (publish-and-ack, claims, dead letters, trimming), unchanged,
on the Valkey Cluster of this directory."""

from tests.integration.conftest import redis  # noqa: F401 (the fixture the tests take)
from tests.integration.test_streams import *  # noqa: F403
