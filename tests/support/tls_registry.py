"""A registry as GHCR is one: TLS on port 443 of a name, speaking HTTP/2, reached here
through an HTTP CONNECT proxy on loopback.

The other test registries are plain HTTP on 127.0.0.1, which the receiver reaches over
plain HTTP as Docker does, so they never show the HTTPS path: ALPN, HTTP/2, one connection
for a whole poll tick. This one is `docker-registry` with a certificate for `registry.test`
(its own self-signed root), listening on 127.0.0.1; a client is pointed at it with the
ordinary proxy and trust settings (`HTTPS_PROXY`, `SSL_CERT_FILE`), and the proxy maps
`registry.test:443` to it and counts the tunnels it opens: the connections the client made.

This module must not import pytest: benchmarks use it too.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import select
import shutil
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import daemons

HOST = "registry.test"
_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_CONFIG = "application/vnd.docker.container.image.v1+json"


def _certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOST, and its key: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "registry-cert.pem", workdir / "registry-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TlsRegistry(daemons.Closing):
    """`docker-registry` serving HTTPS (HTTP/2 by ALPN) for HOST, anonymous, on loopback."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("docker-registry") is None:
            raise daemons.StackUnavailable("docker-registry is not installed")
        self.workdir = workdir
        self.ca_file, key_file = _certificate(workdir)
        self._trust = ssl.create_default_context(cafile=str(self.ca_file))
        self._trust.check_hostname = False  # loopback's address is not HOST

        def settings(address: str) -> dict[str, Any]:
            tls = {"certificate": str(self.ca_file), "key": str(key_file)}
            return daemons.registry_config(
                address, self.workdir / "storage", http={"addr": address, "tls": tls}
            )

        self.address, self._process = daemons.serve_registry(
            self.workdir, "tls-registry", settings, ready=self._answers
        )

    def _answers(self, address: str) -> bool:
        try:
            return httpx.get(f"https://{address}/v2/", verify=self._trust).status_code == 200
        except httpx.HTTPError:
            return False

    def publish(self, repositories: list[str]) -> str:
        """Put one tiny image (a config, no layers) under `latest` in every repository;
        returns its manifest digest."""
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers"}}
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": _MANIFEST,
                "config": {"mediaType": _CONFIG, "size": len(config), "digest": _digest(config)},
                "layers": [],
            }
        ).encode()
        with httpx.Client(base_url=f"https://{self.address}", verify=self._trust) as http:
            for repository in repositories:
                upload = http.post(f"/v2/{repository}/blobs/uploads/")
                upload.raise_for_status()
                location = upload.headers["location"]
                joiner = "&" if "?" in location else "?"
                http.put(
                    f"{location}{joiner}digest={_digest(config)}", content=config
                ).raise_for_status()
                put = http.put(
                    f"/v2/{repository}/manifests/latest",
                    content=manifest,
                    headers={"Content-Type": _MANIFEST},
                )
                put.raise_for_status()
        return _digest(manifest)

    def close(self) -> None:
        daemons.stop_process(self._process, timeout=10)


class ConnectProxy(daemons.Closing):
    """An HTTP CONNECT proxy on loopback that reaches only the hosts it maps
    (`host:port` -> loopback `host:port`) and counts the tunnels it opens."""

    def __init__(self, routes: dict[str, str]) -> None:
        self.routes = routes
        self.tunnels: list[str] = []
        self._lock = threading.Lock()
        self._server = daemons.LoopbackServer(_ConnectHandler, self)
        self.url = f"http://{self._server.address}"

    def open(self, target: str) -> socket.socket | None:
        """A connection to where `target` is mapped, counted; None for an unmapped one."""
        mapped = self.routes.get(target)
        if mapped is None:
            return None
        host, _, port = mapped.rpartition(":")
        with self._lock:
            self.tunnels.append(target)
        return socket.create_connection((host, int(port)), timeout=10)

    def close(self) -> None:
        self._server.close()


class _ConnectHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_CONNECT(self) -> None:
        owner: ConnectProxy = self.server.owner  # type: ignore[attr-defined]
        upstream = owner.open(self.path)
        if upstream is None:
            self.send_error(403, "not a mapped host")
            return
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.close_connection = True
        with upstream:
            _splice(self.connection, upstream)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    peers = {a: b, b: a}
    while True:
        readable, _, _ = select.select(list(peers), [], [], 30)
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)
