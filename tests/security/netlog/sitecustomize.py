"""Records every socket connect and name lookup of a Python process, for the security tests.

On a child process's ``PYTHONPATH`` while ``SECURITY_TEST_NETLOG`` names a file, this module (imported by Python at
start-up) appends one line per ``connect``/``connect_ex`` (``connect <family> <address>``) and per
``getaddrinfo`` (``lookup <host>``) to that file. It only records; the test reads the file and judges.
"""

from __future__ import annotations

import os
import socket
from typing import Any

_LOG = os.environ.get("SECURITY_TEST_NETLOG")

if _LOG:
    _log_path: str = _LOG  # narrowed here: mypy does not carry the narrowing of a global into the function below
    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def _record(line: str) -> None:
        with open(_log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {line}\n")

    def _logged_connect(sock: socket.socket, address: Any) -> None:
        _record(f"connect {int(sock.family)} {address!r}")
        _connect(sock, address)

    def _logged_connect_ex(sock: socket.socket, address: Any) -> int:
        _record(f"connect {int(sock.family)} {address!r}")
        return _connect_ex(sock, address)

    def _logged_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        _record(f"lookup {host!r}")
        return _getaddrinfo(host, *args, **kwargs)

    # typeshed declares these on _socket.socket, so a wrapper taking the socket.socket it patches reads as narrower
    socket.socket.connect = _logged_connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = _logged_connect_ex  # type: ignore[method-assign, assignment]
    socket.getaddrinfo = _logged_getaddrinfo
