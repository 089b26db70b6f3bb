"""Debian's nginx running the shipped edge config (ops/nginx/pm.conf) for one test: its own prefix, temp
and log directories, loopback ports, in the foreground (`daemon off`), stopped at the end.

    binary = nginx_binary()                          # None: not installed (the caller skips)
    with running_nginx(binary, directory, gateway_port=..., auth_port=...) as edge:
        edge.url                                     # http://127.0.0.1:<free port>

The shipped file is used as it is but for its three deployment lines (the two upstream servers and the
`listen` port), which `edge_config` substitutes and requires to be there exactly once each, so a change
to the file's shape fails the tests instead of testing something else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
EDGE_CONFIG_FILE = ROOT / "ops" / "nginx" / "pm.conf"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0

# The shipped file's deployment lines, as they are written there.
GATEWAY_SERVER_LINE = "server 127.0.0.1:8080;"
AUTH_CENTER_SERVER_LINE = "server 127.0.0.1:8095;"
LISTEN_LINE = "listen 8000;"
TEMP_DIRECTORIES = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found is not None:
        return found
    return next((path for path in NGINX_CANDIDATES if os.access(path, os.X_OK)), None)


def edge_config(text: str, *, gateway_port: int, auth_port: int, listen_port: int) -> str:
    """The shipped config with its upstreams and listen port on loopback ports of the test's own."""
    for line in (GATEWAY_SERVER_LINE, AUTH_CENTER_SERVER_LINE, LISTEN_LINE):
        assert text.count(line) == 1, f"ops/nginx/pm.conf should hold {line!r} exactly once"
    return (
        text.replace(GATEWAY_SERVER_LINE, f"server 127.0.0.1:{gateway_port};")
        .replace(AUTH_CENTER_SERVER_LINE, f"server 127.0.0.1:{auth_port};")
        .replace(LISTEN_LINE, f"listen 127.0.0.1:{listen_port};")
    )


def main_config(directory: Path, edge_file: Path) -> str:
    """The nginx.conf around the edge file: what Debian's /etc/nginx/nginx.conf does, with every path in
    `directory` (the compiled-in ones are under /var and /run)."""
    temp_paths = "\n".join(f"    {name}_temp_path {directory / 'temp' / name};" for name in TEMP_DIRECTORIES)
    # Root's workers would run as `nobody`, which cannot enter pytest's private temp directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {directory / 'access.log'};\n"
        f"{temp_paths}\n"
        f"    include {edge_file};\n"
        "}\n"
    )


def command(binary: str, directory: Path, *extra: str) -> list[str]:
    return [
        binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", str(directory / "error.log"),
        "-g", f"daemon off; pid {directory / 'nginx.pid'};", *extra,
    ]  # fmt: skip


def write_configs(directory: Path, edge_text: str) -> None:
    for name in TEMP_DIRECTORIES:
        (directory / "temp" / name).mkdir(parents=True, exist_ok=True)
    edge_file = directory / "pm.conf"
    edge_file.write_text(edge_text)
    (directory / "nginx.conf").write_text(main_config(directory, edge_file))


def check_config(binary: str, directory: Path, edge_text: str) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of the edge text inside the main config: its exit code and what it said."""
    directory.mkdir(parents=True, exist_ok=True)
    write_configs(directory, edge_text)
    return subprocess.run(
        command(binary, directory, "-t"), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )


@dataclass(frozen=True)
class RunningNginx:
    url: str
    directory: Path
    process: subprocess.Popen[bytes]

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.directory / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_nginx(binary: str, directory: Path, *, gateway_port: int, auth_port: int) -> Iterator[RunningNginx]:
    """nginx in the foreground with the shipped edge config; stopped (SIGTERM, then SIGKILL) on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    edge_text = edge_config(
        EDGE_CONFIG_FILE.read_text(), gateway_port=gateway_port, auth_port=auth_port, listen_port=port
    )
    write_configs(directory, edge_text)
    with open(directory / "stdout.log", "wb") as output:
        process = subprocess.Popen(
            command(binary, directory), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    edge = RunningNginx(f"http://127.0.0.1:{port}", directory, process)
    try:
        _wait_listening(edge, port)
        yield edge
    finally:
        _stop(process)


def _wait_listening(edge: RunningNginx, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if edge.process.poll() is not None:
            raise AssertionError(f"nginx exited with {edge.process.returncode}:\n{edge.error_log()[-4000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nginx did not listen on {port} within {START_TIMEOUT_S} s:\n{edge.error_log()[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # SIGTERM is nginx's fast shutdown: a graceful one (SIGQUIT) would wait for open event streams.
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
