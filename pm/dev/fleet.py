"""The fleet as processes: read the Procfile, start each process type N times, stop them all.

`pm up` runs the Procfile through honcho (what an operator uses); the end-to-end tests and the
benchmark use `Fleet` to start the same commands as separate processes they can count, kill and
restart.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"
STOP_TIMEOUT_S = 15.0


def read_procfile(path: Path = PROCFILE) -> dict[str, str]:
    """Process type -> command, in file order."""
    types: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, command = line.partition(":")
        if not separator or not name.strip() or not command.strip():
            raise ValueError(f"{path}:{number}: expected 'type: command', got {line!r}")
        types[name.strip()] = command.strip()
    return types


def _bin_dir() -> str:
    return str(Path(sys.executable).parent)


@dataclass
class Fleet:
    """Processes started from the Procfile, tracked by type, so a test can kill one and restart it."""

    environment: Mapping[str, str]
    log_dir: Path
    processes: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)

    def start(
        self, process_type: str, count: int = 1, port_base: int | None = None, command: str | None = None
    ) -> list[subprocess.Popen[bytes]]:
        """Start `count` processes of a Procfile type (or of `command`, tracked under that type's name)."""
        command = command or read_procfile()[process_type]
        started = []
        for index in range(count):
            env = {**os.environ, **self.environment, "PATH": f"{_bin_dir()}:{os.environ.get('PATH', '')}"}
            if port_base is not None:
                env["PORT"] = str(port_base + index)
            number = len(self.processes.get(process_type, [])) + 1
            log_path = self.log_dir / f"{process_type}.{number}.log"
            log_file = open(log_path, "ab")
            process = subprocess.Popen(
                shlex.split(command), env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
            log_file.close()
            self.processes.setdefault(process_type, []).append(process)
            started.append(process)
        return started

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no cleanup at all, as a crash or an OOM kill."""
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)

    def alive(self, process_type: str) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes.get(process_type, []) if p.poll() is None]

    def stop(self) -> None:
        """SIGTERM everything, wait, then SIGKILL what is left."""
        everything = [p for group in self.processes.values() for p in group if p.poll() is None]
        for process in everything:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in everything:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)

    def logs(self, process_type: str) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{process_type}.*.log")))
