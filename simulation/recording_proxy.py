"""A TLS-terminating TCP proxy that records what a SuperNode sends to the SuperLink.

Egress accounting (:mod:`simulation.egress_accounting`) needs the plaintext a
site's SuperNode sends, which TLS hides on the wire. One proxy sits between one
SuperNode and the SuperLink on loopback: it ends the SuperNode's TLS with the
consortium's server certificate, opens its own TLS connection to the SuperLink
(verified against the consortium CA), and forwards in both directions. For every
connection it records how many ciphertext bytes the SuperNode sent and the
plaintext inside them. Nothing else changes: the SuperNode still speaks TLS with
its usual root certificate, and the SuperLink still authenticates it.

A test and bench instrument only; a real deployment has no proxy.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

_CHUNK = 1 << 16


@dataclass
class RecordedConnection:
    """What one SuperNode connection carried towards the SuperLink."""

    ciphertext_bytes: int = 0  # bytes on the socket, TLS records included
    plaintext: bytearray = field(default_factory=bytearray)  # inside TLS


class _TlsEnd:
    """One side of the proxy: a socket and an in-memory TLS session over it.

    Memory BIOs let the proxy count the raw bytes before TLS decrypts them and
    drive both sessions from one thread without blocking.
    """

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
    ):
        self.sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._handshaken = False
        self._pending = bytearray()  # plaintext to send once the handshake is done
        self.closed = False

    def start(self) -> None:
        """Send the first handshake flight (the client's hello)."""
        self._handshake()

    def feed(self, raw: bytes) -> bytes:
        """Take raw bytes from the socket; return the plaintext they completed."""
        self._incoming.write(raw)
        if not self._handshaken and not self._handshake():
            return b""
        plaintext = bytearray()
        while True:
            try:
                chunk = self._tls.read(_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the peer closed the TLS session
                self.closed = True
                break
            if not chunk:
                break
            plaintext += chunk
        self._flush()
        return bytes(plaintext)

    def write(self, plaintext: bytes) -> None:
        """Encrypt and send ``plaintext`` (held back until the handshake is done)."""
        if not self._handshaken:
            self._pending += plaintext
            return
        self._tls.write(plaintext)
        self._flush()

    def _handshake(self) -> bool:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        self._handshaken = True
        self._flush()
        if self._pending:
            pending, self._pending = bytes(self._pending), bytearray()
            self.write(pending)
        return True

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.sock.sendall(data)


class RecordingProxy:
    """Listen on ``127.0.0.1:<free port>``; forward every connection to ``upstream``.

    ``server_cert``/``server_key`` are what the SuperNode sees (the consortium's
    server certificate); ``ca_cert`` verifies the SuperLink, addressed by
    ``upstream_hostname``. Use as a context manager; :attr:`connections` holds
    one :class:`RecordedConnection` per accepted connection, in order.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        server_cert: Path,
        server_key: Path,
        ca_cert: Path,
        upstream_hostname: str = "localhost",
    ):
        self._upstream = upstream
        self._upstream_hostname = upstream_hostname
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_context.load_cert_chain(str(server_cert), str(server_key))
        self._client_context = ssl.create_default_context(cafile=str(ca_cert))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.connections: list[RecordedConnection] = []
        self.errors: list[str] = []

    @property
    def address(self) -> str:
        """``host:port`` to give the SuperNode as its SuperLink."""
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def __enter__(self) -> RecordingProxy:
        self._start_thread(self._accept_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting and forwarding; close every socket."""
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def sent_bytes(self) -> int:
        """Ciphertext bytes the SuperNode sent over all its connections."""
        with self._lock:
            return sum(c.ciphertext_bytes for c in self.connections)

    def _start_thread(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = RecordedConnection()
            with self._lock:
                self.connections.append(record)
            self._start_thread(self._forward, downstream, record)

    def _forward(self, downstream: socket.socket, record: RecordedConnection) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=10)
        except OSError as err:
            self.errors.append(f"cannot reach the SuperLink: {err}")
            downstream.close()
            return
        ends = {
            downstream: _TlsEnd(downstream, self._server_context, server_side=True),
            upstream: _TlsEnd(
                upstream,
                self._client_context,
                server_side=False,
                server_hostname=self._upstream_hostname,
            ),
        }
        peer = {downstream: ends[upstream], upstream: ends[downstream]}
        selector = selectors.DefaultSelector()
        for sock in ends:
            sock.setblocking(True)
            selector.register(sock, selectors.EVENT_READ)
        try:
            ends[upstream].start()
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    sock = key.fileobj
                    raw = sock.recv(_CHUNK)
                    if not raw:
                        return
                    if sock is downstream:
                        record.ciphertext_bytes += len(raw)
                    plaintext = ends[sock].feed(raw)
                    if plaintext:
                        if sock is downstream:
                            record.plaintext += plaintext
                        peer[sock].write(plaintext)
                    if ends[sock].closed:
                        return
        except (OSError, ssl.SSLError) as err:
            # A SuperNode killed mid-stream ends here; what it sent is kept.
            self.errors.append(f"{type(err).__name__}: {err}")
        finally:
            selector.close()
            for sock in ends:
                sock.close()
