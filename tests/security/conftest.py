"""The security suite's fixtures: a socket guard on every test, and the closing table of input classes.

The guard wraps ``socket.socket.connect`` / ``connect_ex`` and ``socket.getaddrinfo`` for the duration of each test
in this folder: a connection to anything but a loopback port the test itself started (the embedded stack's broker
and cache, a worker's metrics port, a server the test runs) is refused and recorded, and a test with a recorded
violation fails at teardown, even when the code under test swallowed the refusal. Name lookups of anything but
literal addresses and ``localhost`` are refused the same way, so no test can reach DNS either.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from moderation.observability.metrics import Metrics
from moderation.pipeline import Pipeline, build_pipeline
from moderation.settings import load_settings
from tests.security.hostile import make_store
from tests.security.report import ROWS, SUMMARY, OutcomeRow

HERE = Path(__file__).resolve().parent


@dataclass
class SocketGuard:
    """The loopback ports a test may connect to, and every attempt that was refused."""

    ports: set[int] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)
    connections: list[tuple[str, int]] = field(default_factory=list)

    def allow(self, *ports: int) -> None:
        self.ports.update(ports)

    def permits(self, family: int, address: Any) -> bool:
        if family == getattr(socket, "AF_UNIX", None):
            return True  # a local socket file, not the network
        host, port = str(address[0]), int(address[1])
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = False
        return loopback and port in self.ports

    def check(self, sock: socket.socket, address: Any) -> None:
        if not self.permits(sock.family, address):
            self.violations.append(f"connect to {address!r}")
            raise PermissionError(f"socket guard: connection to {address!r} is not to a port this test started")
        if sock.family != getattr(socket, "AF_UNIX", None):
            self.connections.append((str(address[0]), int(address[1])))


@pytest.fixture(autouse=True)
def socket_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[SocketGuard]:
    guard = SocketGuard()
    if "stack" in request.fixturenames:
        stack = request.getfixturevalue("stack")
        guard.allow(_port(stack.kafka_bootstrap), _port(stack.redis_url))
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        guard.check(sock, address)
        connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        guard.check(sock, address)
        return connect_ex(sock, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "localhost") and not _literal(str(name)):
            guard.violations.append(f"name lookup of {name!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"socket guard: lookup of {name!r} refused")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield guard
    if guard.violations:
        pytest.fail("network access outside what the test started: " + "; ".join(guard.violations))


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _port(address: str) -> int:
    return int(address.rstrip("/").rsplit(":", 1)[1].split("/", 1)[0])


# --- the worker's pipeline, in this process -----------------------------------------------------------------
@pytest.fixture(scope="session")
def security_pipeline(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Pipeline:
    """The pipeline a worker runs (model, encoders, policy, stores), without Redis, with low limits."""
    base = tmp_path_factory.mktemp("security-store")
    stores = make_store(base / "store", base / "outside")
    settings = load_settings(
        model_dir=model_dir,
        stores={name: str(path) for name, path in stores.items()},
        max_text_chars=2000,
        max_images_per_post=4,
        max_message_bytes=200_000,
        device="cpu",
        torch_threads=1,  # one thread: on a busy CPU, torch's default threads thrash (100x slower here)
    )
    return build_pipeline(settings, None, Metrics())


# --- a network log for worker subprocesses -------------------------------------------------------------------
@pytest.fixture
def subprocess_netlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file where every Python child process started during the test records each connect and name lookup
    (through ``tests/security/netlog/sitecustomize.py`` on its ``PYTHONPATH``)."""
    log = tmp_path / "netlog.txt"
    log.touch()
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(HERE / "netlog"), os.environ.get("PYTHONPATH")) if p)
    )
    monkeypatch.setenv("SECURITY_TEST_NETLOG", str(log))
    return log


# --- the closing table ---------------------------------------------------------------------------------------
@pytest.fixture
def outcome_table() -> Iterator[list[OutcomeRow]]:
    """Rows a test adds to the closing table of input classes."""
    rows: list[OutcomeRow] = []
    yield rows
    ROWS.extend(rows)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS and not SUMMARY:
        return
    write = terminalreporter.write_line
    terminalreporter.section("security: hostile input refused cleanly, recorded, never crashing or leaking")
    if ROWS:
        write("input classes, one message each, through a real worker on the real broker and cache:")
        write(f"{'input class':<48}{'outcome':<13}{'reason code':<30}{'expected':<30}original bytes")
        for row in ROWS:
            mark = "" if row.ok else "   <-- WRONG"
            write(f"{row.input_class[:47]:<48}{row.outcome:<13}{row.reason:<30}{row.expected:<30}{row.original}{mark}")
        lost = sum(1 for row in ROWS if row.outcome == "MISSING")
        wrong = sum(1 for row in ROWS if not row.ok)
        write(f"{len(ROWS)} input classes, {wrong} with the wrong outcome, {lost} lost")
    for line in SUMMARY:
        write(line)
