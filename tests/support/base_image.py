"""A minimal Debian base image made on this host, for building deploy/Dockerfile without Docker Hub.

`rootfs_tarball()` runs ``debootstrap --variant=minbase`` of this host's Debian release,
from the mirror apt is already configured with, adding python3, python3-venv and
ca-certificates, and keeps the result as a tarball outside the repository: in
``/var/cache/workspace-image-receiver`` (or ``$RECEIVER_BASE_CACHE``), named after the
suite, variant, architecture and a hash of everything that goes in.  The tarball is
written under a temporary name and renamed into place, under a lock, so an interrupted
build never leaves a broken cache and a fresh clone on the same machine (CI) reuses it.
`ensure_base_image()` imports it into a Docker engine (a private test engine starts empty).

The host's extra CA certificates (``/usr/local/share/ca-certificates``) go into the base
too, as a company's own base image carries the company's CA: where outbound TLS passes an
inspecting proxy, pip inside ``docker build`` then trusts what the host trusts.

``python -m tests.support.base_image`` builds (or finds) the cached tarball and prints its path.
This module must not import pytest: it is usable outside the test suite.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from tests.support.daemons import StackUnavailable, die_with_parent, file_lock, remove_tree

__all__ = [
    "BaseImage",
    "BaseImageUnavailable",
    "BaseSpec",
    "debian_mirror",
    "ensure_base_image",
    "rootfs_tarball",
]

CACHE_ENV = "RECEIVER_BASE_CACHE"
DEFAULT_CACHE = Path("/var/cache/workspace-image-receiver")
VARIANT = "minbase"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
IMAGE_REPOSITORY = "receiver-test-base"
# Bump when the recipe below changes in a way the other key parts do not capture.
RECIPE_VERSION = 1
DEBOOTSTRAP_TIMEOUT = 900.0
# Emptied, as Debian's own slim images leave them out (the directories stay).
_EMPTIED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
# Downloaded package files and indexes, caches that apt rebuilds, and logs of the install.
_DROPPED = (
    "var/lib/apt/lists/*_*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/log/*.log",
    "var/log/apt/*",
    # The engine provides these in every container.
    "etc/resolv.conf",
    "etc/hostname",
)
_IMAGE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
]

Log = Callable[[str], None]
# debootstrap and chroot live in /usr/sbin, which a non-login shell may not have on PATH.
_PATH = ":".join([os.environ.get("PATH", "/usr/bin:/bin"), "/usr/local/sbin", "/usr/sbin", "/sbin"])


class BaseImageUnavailable(StackUnavailable):
    """The base cannot be made here (not Debian, no debootstrap, not root, no mirror)."""


@dataclass(frozen=True)
class BaseSpec:
    """What goes into the base: the cache key is a function of exactly this."""

    suite: str
    arch: str
    mirror: str
    variant: str = VARIANT
    packages: tuple[str, ...] = PACKAGES
    # (path relative to EXTRA_CA_DIR, sha256 of its content)
    ca_certs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_host(cls) -> BaseSpec:
        """The base matching this host: its Debian release, architecture, mirror and CAs."""
        suite = host_suite()
        return cls(
            suite=suite, arch=host_arch(), mirror=debian_mirror(suite), ca_certs=_extra_cas()
        )

    @property
    def digest(self) -> str:
        # The mirror is left out: any mirror serves the same packages for a suite.
        content = {
            "recipe": RECIPE_VERSION,
            "suite": self.suite,
            "arch": self.arch,
            "variant": self.variant,
            "packages": sorted(self.packages),
            "ca_certs": sorted(self.ca_certs),
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """``debian-<suite>-<variant>-<arch>-<hash>``: the tarball's stem."""
        return f"debian-{self.suite}-{self.variant}-{self.arch}-{self.digest}"

    @property
    def image_tag(self) -> str:
        """The reference the tarball is imported under."""
        return f"{IMAGE_REPOSITORY}:{self.suite}-{self.variant}-{self.arch}-{self.digest}"


@dataclass(frozen=True)
class BaseImage:
    """A base image present on an engine; `imported` when this call put it there."""

    ref: str
    imported: bool


# -- the host -----------------------------------------------------------------------------


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError as exc:
        raise BaseImageUnavailable(f"cannot read /etc/os-release: {exc}") from exc
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("\"'")
    return values


def host_suite() -> str:
    """This host's Debian codename, e.g. ``bookworm``."""
    release = _os_release()
    if release.get("ID") != "debian" or not release.get("VERSION_CODENAME"):
        raise BaseImageUnavailable(
            f"the base is made with debootstrap from Debian's packages; this host is "
            f"{release.get('PRETTY_NAME', 'not Debian')}"
        )
    return release["VERSION_CODENAME"]


def host_arch() -> str:
    """The Debian architecture name of this host, e.g. ``amd64``."""
    try:
        done = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BaseImageUnavailable(f"dpkg --print-architecture failed: {exc}") from exc
    return done.stdout.strip()


def _sources_entries(apt_dir: Path) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """(URIs, suites, components) of every enabled ``deb`` source apt is configured with."""
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        with contextlib.suppress(OSError):
            for raw in path.read_text().splitlines():
                line = raw.split("#", 1)[0].strip()
                if not line.startswith("deb "):
                    continue
                words = line[4:].strip()
                if words.startswith("["):
                    words = words.partition("]")[2]
                fields = words.split()
                if len(fields) >= 2:
                    yield [fields[0]], [fields[1]], fields[2:]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            for stanza in _deb822(path.read_text()):
                if "deb" not in stanza.get("types", "").split():
                    continue
                if stanza.get("enabled", "yes").lower() == "no":
                    continue
                yield (
                    stanza.get("uris", "").split(),
                    stanza.get("suites", "").split(),
                    stanza.get("components", "").split(),
                )


def _deb822(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
        elif raw[0] in " \t" and key:
            stanza[key] += " " + raw.strip()
        else:
            name, _, value = raw.partition(":")
            key = name.strip().lower()
            stanza[key] = value.strip()


def debian_mirror(suite: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """The URI apt fetches `suite`'s ``main`` component from (never a hard-coded host)."""
    for uris, suites, components in _sources_entries(apt_dir):
        if suite in suites and "main" in components and uris:
            return uris[0].rstrip("/")
    raise BaseImageUnavailable(f"no apt source for {suite} main in {apt_dir}")


def _extra_cas() -> tuple[tuple[str, str], ...]:
    if not EXTRA_CA_DIR.is_dir():
        return ()
    found = []
    for path in sorted(EXTRA_CA_DIR.rglob("*.crt")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found.append((str(path.relative_to(EXTRA_CA_DIR)), digest))
    return tuple(found)


# -- the cached tarball -------------------------------------------------------------------


def cache_dir() -> Path:
    """Where tarballs are kept: ``$RECEIVER_BASE_CACHE`` or /var/cache/workspace-image-receiver."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def rootfs_tarball(
    spec: BaseSpec | None = None, cache: Path | None = None, log: Log | None = None
) -> Path:
    """The cached root file system tarball for `spec` (default: this host), made on a miss."""
    spec = spec or BaseSpec.for_host()
    cache = cache or cache_dir()
    say = log or (lambda _message: None)
    target = cache / f"{spec.name}.tar"
    if target.is_file():
        return target
    if os.geteuid() != 0:
        raise BaseImageUnavailable(f"{target} is not built yet, and building it needs root")
    for tool in ("debootstrap", "chroot", "tar"):
        if shutil.which(tool, path=_PATH) is None:
            raise BaseImageUnavailable(f"{tool} is not installed (scripts/system-deps adds it)")
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / ".lock"):
        if target.is_file():  # another process made it while we waited
            return target
        _remove_stale_work(cache, say)
        work = Path(tempfile.mkdtemp(prefix=".work-", dir=cache))
        try:
            started = time.monotonic()
            say(f"building {target.name} with debootstrap from {spec.mirror} ...")
            _build(spec, work, work / "rootfs.tar")
            os.replace(work / "rootfs.tar", target)
            _fsync_dir(cache)
            say(f"built {target} in {time.monotonic() - started:.0f}s")
        finally:
            remove_tree(work)
    return target


def _build(spec: BaseSpec, work: Path, out: Path) -> None:
    root = work / "root"
    log = work / "debootstrap.log"
    args = [
        "debootstrap",
        f"--variant={spec.variant}",
        f"--arch={spec.arch}",
        f"--include={','.join(spec.packages)}",
        spec.suite,
        str(root),
        spec.mirror,
    ]
    _run(args, log, DEBOOTSTRAP_TIMEOUT)
    if spec.ca_certs:
        for relative, _digest in spec.ca_certs:
            destination = root / "usr/local/share/ca-certificates" / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(EXTRA_CA_DIR / relative, destination)
            destination.chmod(0o644)
        _run(["chroot", str(root), "update-ca-certificates"], log, 120)
    _trim(root)
    # Device nodes, /proc and /sys come from the engine in every container.
    _run(
        [
            "tar",
            "--numeric-owner",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "-C",
            str(root),
            "-cf",
            str(out),
            ".",
        ],
        log,
        300,
    )
    with out.open("rb") as f:
        os.fsync(f.fileno())


def _run(args: list[str], log: Path, timeout: float) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        try:
            done = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PATH": _PATH, "LC_ALL": "C"},
                preexec_fn=die_with_parent,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{args[0]} took over {timeout:.0f}s; {_tail(log)}") from None
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} exited {done.returncode}; {_tail(log)}")


def _tail(log: Path, lines: int = 25) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log"
    return "tail of its log:\n" + "\n".join(text.splitlines()[-lines:])


def _trim(root: Path) -> None:
    for relative in _EMPTIED:
        top = root / relative
        if top.is_dir() and not top.is_symlink():
            shutil.rmtree(top)
            top.mkdir(mode=0o755)
    for pattern in _DROPPED:
        for path in root.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_work(cache: Path, say: Log) -> None:
    # Called under the lock: no other builder is at work, so any work dir is a leftover.
    for stale in sorted(cache.glob(".work-*")):
        if stale.is_dir() and not remove_tree(stale):
            say(f"warning: {stale} still has mounts under it; left in place")


# -- the engine ---------------------------------------------------------------------------


def ensure_base_image(client: docker.DockerClient, log: Log | None = None) -> BaseImage:
    """Make sure the engine has this host's base image; import the cached tarball if not."""
    spec = BaseSpec.for_host()
    try:
        client.images.get(spec.image_tag)
    except docker.errors.ImageNotFound:
        pass
    else:
        return BaseImage(spec.image_tag, imported=False)
    tarball = rootfs_tarball(spec, log=log)
    repository, tag = spec.image_tag.split(":", 1)
    result = client.api.import_image(
        src=str(tarball), repository=repository, tag=tag, changes=_IMAGE_CHANGES
    )
    text = result.decode() if isinstance(result, bytes) else str(result)
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            item = json.loads(line)
            if isinstance(item, dict) and ("error" in item or "errorDetail" in item):
                detail = item.get("error") or item.get("errorDetail")
                raise RuntimeError(f"import of {tarball} failed: {detail}")
    return BaseImage(spec.image_tag, imported=True)


def main() -> int:
    try:
        path = rootfs_tarball(log=lambda message: print(message, file=sys.stderr))
    except BaseImageUnavailable as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
