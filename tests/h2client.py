"""
A small blocking HTTP/2 client over TLS (the ``h2`` library on an ``ssl`` socket), for tests.

Tests run it in their own thread against a real daemon; one :class:`H2Client`
is one connection, and its requests are streams on it, one after another.
A self-signed certificate for the daemon comes from :func:`self_signed`.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path

import h2.config
import h2.connection
import h2.events
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["H2Client", "StreamReset", "self_signed", "tls_socket"]


class StreamReset(Exception):
    """The server reset the stream (RST_STREAM) before it ended: the answer is incomplete."""

    def __init__(self, code: int, data: bytes) -> None:
        super().__init__(f"stream reset, error code {code}, after {len(data)} body bytes")
        self.code = code
        self.data = data


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a certificate for ``localhost``/127.0.0.1, as PEM files: (key, cert)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def tls_socket(port: int, alpn: str) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:``port`` offering only ``alpn`` (not verifying the cert)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    return context.wrap_socket(raw, server_hostname="localhost")


class H2Client:
    """One HTTP/2 connection; :meth:`request` sends a stream and reads its answer whole."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = tls_socket(port, "h2")
        #: What the server chose: "h2", or None when it does not speak HTTP/2.
        self.protocol = self.sock.selected_alpn_protocol()
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.conn.close_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.sock.close()

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, header pairs in the order received, body); :class:`StreamReset` if reset."""
        stream = self.conn.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":path", path),
            (":scheme", "https"),
            (":authority", f"127.0.0.1:{self.port}"),
            *((name.lower(), value) for name, value in headers.items()),
        ]
        if body:
            fields.append(("content-length", str(len(body))))
        self.conn.send_headers(stream, fields, end_stream=not body)
        if body:
            self.conn.send_data(stream, body, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        status = 0
        received: list[tuple[str, str]] = []
        data = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            for event in self.conn.receive_data(chunk):
                if getattr(event, "stream_id", stream) != stream:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    for name, value in event.headers:
                        if name == b":status":
                            status = int(value)
                        else:
                            received.append((name.decode("latin-1"), value.decode("latin-1")))
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded):
                    self.sock.sendall(self.conn.data_to_send())
                    return status, received, data
                elif isinstance(event, h2.events.StreamReset):
                    raise StreamReset(event.error_code, data)
            self.sock.sendall(self.conn.data_to_send())
