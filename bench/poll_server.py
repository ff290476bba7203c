"""The poll benchmark's far side, in its own process: a GHCR-like token registry holding
R repositories, reached through delay proxies (registry and token realm alike).

``python -m bench.poll_server --repos 300 --delay 0.025`` prints one JSON line (addresses,
credentials, the digest every tag points at, setup seconds) and serves until its stdin
closes.  The repositories are made over the registry's HTTP API: one small image pushed
once, then cross-mounted into each other repository and its manifest put there.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.token_registry import TokenRegistry

from .util import Child, free_port, python

USER, PASSWORD = "bench", "bench-password"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
SCOPES_PER_PUSH_TOKEN = 25


def repo_name(index: int) -> str:
    return f"bench/workspace-template-r{index:03d}"


class ProxiedTokenRegistry(TokenRegistry):
    """A TokenRegistry whose challenge names a realm behind a delay proxy."""

    proxy_for: Callable[[int], int]
    direct_realm: str

    @property
    def realm(self) -> str:
        return self._proxied_realm

    @realm.setter
    def realm(self, url: str) -> None:
        # _start sets the token service's own URL before writing the registry's config.
        self.direct_realm = url
        parts = urllib.parse.urlsplit(url)
        port = self.proxy_for(int(parts.port or 80))
        self._proxied_realm = f"http://127.0.0.1:{port}{parts.path}"


def _image() -> tuple[bytes, bytes, bytes]:
    """A tiny image: (layer blob, config blob, manifest)."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        data = b"poll benchmark\n"
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(data), 1_700_000_000
        tar.addfile(info, io.BytesIO(data))
    raw = tar_bytes.getvalue()
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [_digest(raw)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": _digest(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": _digest(layer),
                }
            ],
        }
    ).encode()
    return layer, config, manifest


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Pusher:
    def __init__(self, registry: TokenRegistry, realm: str) -> None:
        self.base = f"http://{registry.registry}"
        self.realm = realm
        self.service = registry.service
        self.http = httpx.Client(timeout=30, auth=None)

    def token(self, repos: list[str], source: str | None) -> str:
        params: list[tuple[str, str | int | float | bool | None]] = [("service", self.service)]
        params += [("scope", f"repository:{repo}:push,pull") for repo in repos]
        if source:
            params.append(("scope", f"repository:{source}:pull"))
        answer = self.http.get(self.realm, params=params, auth=(USER, PASSWORD))
        answer.raise_for_status()
        return str(answer.json()["token"])

    def upload(self, repo: str, token: str, blob: bytes) -> None:
        auth = {"Authorization": f"Bearer {token}"}
        started = self.http.post(f"{self.base}/v2/{repo}/blobs/uploads/", headers=auth)
        started.raise_for_status()
        location = urllib.parse.urljoin(self.base, started.headers["location"])
        sep = "&" if "?" in location else "?"
        put = self.http.put(
            f"{location}{sep}digest={_digest(blob)}",
            content=blob,
            headers={**auth, "Content-Type": "application/octet-stream"},
        )
        put.raise_for_status()

    def mount(self, repo: str, token: str, digest: str, source: str) -> None:
        answer = self.http.post(
            f"{self.base}/v2/{repo}/blobs/uploads/",
            params={"mount": digest, "from": source},
            headers={"Authorization": f"Bearer {token}"},
        )
        if answer.status_code != 201:
            raise RuntimeError(f"mount into {repo} answered {answer.status_code}")

    def put_manifest(self, repo: str, token: str, manifest: bytes) -> str:
        answer = self.http.put(
            f"{self.base}/v2/{repo}/manifests/latest",
            content=manifest,
            headers={"Authorization": f"Bearer {token}", "Content-Type": MANIFEST_V2},
        )
        answer.raise_for_status()
        return str(answer.headers["docker-content-digest"])


def publish(registry: ProxiedTokenRegistry, count: int) -> str:
    """Make `count` repositories holding the same tiny image; returns its manifest digest."""
    layer, config, manifest = _image()
    source = repo_name(0)
    pusher = _Pusher(registry, registry.direct_realm)
    token = pusher.token([source], None)
    pusher.upload(source, token, layer)
    pusher.upload(source, token, config)
    digest = pusher.put_manifest(source, token, manifest)
    others = [repo_name(i) for i in range(1, count)]
    chunks = [
        others[i : i + SCOPES_PER_PUSH_TOKEN] for i in range(0, len(others), SCOPES_PER_PUSH_TOKEN)
    ]

    def chunk_work(repos: list[str]) -> None:
        worker = _Pusher(registry, registry.direct_realm)
        chunk_token = worker.token(repos, source)
        for repo in repos:
            worker.mount(repo, chunk_token, _digest(layer), source)
            worker.mount(repo, chunk_token, _digest(config), source)
            if worker.put_manifest(repo, chunk_token, manifest) != digest:
                raise RuntimeError(f"{repo}: unexpected manifest digest")
        worker.http.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(chunk_work, chunks))
    pusher.http.close()
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repos", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.025)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    proxies: list[Child] = []

    def proxy_for(target: int) -> int:
        listen = free_port()
        child = Child(
            f"delay proxy :{listen}",
            [python(), "-m", "bench.delayproxy", "--delay", str(args.delay), f"{listen}:{target}"],
            args.workdir / f"proxy-{listen}.log",
            cpu=None,
        )
        proxies.append(child)
        deadline = time.monotonic() + 10
        while "ready" not in child.log():
            if child.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"delay proxy did not start: {child.log()}")
            time.sleep(0.05)
        return listen

    started = time.monotonic()
    registry = ProxiedTokenRegistry(users={USER: PASSWORD})
    registry.proxy_for = proxy_for
    try:
        registry._start(args.workdir)
        digest = publish(registry, args.repos)
        _, _, port = registry.registry.partition(":")
        proxied = f"127.0.0.1:{proxy_for(int(port))}"
        print(
            json.dumps(
                {
                    "registry": proxied,
                    "direct_registry": registry.registry,
                    "realm": registry.realm,
                    "service": registry.service,
                    "user": USER,
                    "password": PASSWORD,
                    "digest": digest,
                    "repositories": [repo_name(i) for i in range(args.repos)],
                    "setup_seconds": time.monotonic() - started,
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # serve until the benchmark closes our stdin
    finally:
        registry.close()
        for child in proxies:
            child.stop(timeout=5)


if __name__ == "__main__":
    main()
