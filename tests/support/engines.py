"""The Docker engines the receiver is tested on, each run as a private dockerd.

| kind              | dockerd                         | image store                         | API  |
|-------------------|---------------------------------|-------------------------------------|------|
| `20.10`           | Debian 12's docker.io 20.10.24  | overlay2                            | 1.41 |
| `26.1`            | Debian 13's docker.io 26.1.5    | overlay2 (hosts upgraded to 27-29)  | 1.45 |
| `26.1-containerd` | the same                        | containerd (every fresh Docker 29)  | 1.45 |

Debian 13's binaries come from Debian's archive, which serves the `trixie` suite too: a
private apt configuration (its own sources.list, lists, cache and status, so the system's
apt state is untouched) downloads docker.io, containerd and tini (docker.io's docker-init)
and unpacks them under ``$RECEIVER_ENGINE_CACHE`` (default
``/var/cache/workspace-image-receiver/engines``), once per machine. Debian 13's runc needs
a newer glibc than Debian 12's, so dockerd's PATH starts with a folder of links to the
unpacked binaries and Debian 12's own runc.

`PrivateEngine.start(kind)` starts a dockerd of that kind in a temporary directory (its
own data root, exec root, socket, containerd namespace and config file; no bridge, no
iptables) and `close()` leaves nothing behind: containers removed, daemons stopped,
leftover shims killed (with the sockets they leave in /run/containerd/s), mounts undone,
the directory deleted.

``RECEIVER_TEST_ENGINE`` names the kind a test run uses (default `20.10`);
``python -m tests.support.engines fetch`` fetches Debian 13's binaries ahead of time.

This module must not import pytest: scripts outside the test suite use it too.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors

from tests.support.base_image import debian_mirror, host_suite
from tests.support.daemons import (
    Closing,
    StackUnavailable,
    engine_answers,
    file_lock,
    kill_processes_mentioning,
    log_tail,
    remove_tree,
    spawn,
    stop_process,
    wait_until,
)

ENGINE_ENV: Final = "RECEIVER_TEST_ENGINE"
CACHE_ENV: Final = "RECEIVER_ENGINE_CACHE"
DEFAULT_CACHE: Final = Path("/var/cache/workspace-image-receiver/engines")
START_TIMEOUT: Final = 30.0
FETCH_TIMEOUT: Final = 600.0

DEBIAN13_SUITE: Final = "trixie"
# tini is docker.io's docker-init (a link to tini-static); runc is left out on purpose.
DEBIAN13_PACKAGES: Final = ("docker.io", "containerd", "tini")
DEBIAN_KEYRING: Final = "/usr/share/keyrings/debian-archive-keyring.gpg"
SYSTEM_DOCKERD: Final = Path("/usr/sbin/dockerd")
SYSTEM_RUNC: Final = Path("/usr/sbin/runc")
# Fixed, so that nothing in /usr/local shadows Debian's binaries.
SYSTEM_PATH: Final = "/usr/sbin:/usr/bin:/sbin:/bin"
# dockerd uses a containerd that listens here instead of starting its own.
SYSTEM_CONTAINERD_SOCKET: Final = Path("/run/containerd/containerd.sock")
# Where every containerd-shim-runc-v2 puts its socket, whatever containerd started it.
SHIM_SOCKET_DIR: Final = Path("/run/containerd/s")
# Unix socket paths hold 108 bytes; containerd's longest is this under the exec root.
_SOCKET_PATH_MAX: Final = 100
_LONGEST_SOCKET_SUFFIX: Final = "/x/containerd/containerd.sock.ttrpc"
# Links in the cache's bin/ folder: name -> path inside the unpacked packages.
_DEBIAN13_LINKS: Final = {
    "dockerd": "usr/sbin/dockerd",
    "containerd": "usr/bin/containerd",
    "containerd-shim-runc-v2": "usr/bin/containerd-shim-runc-v2",
    "docker-proxy": "usr/sbin/docker-proxy",
    "docker-init": "usr/bin/tini-static",
    "ctr": "usr/bin/ctr",
}


class EngineKind(enum.StrEnum):
    """An engine the test suite runs on."""

    DOCKER_20 = "20.10"
    DOCKER_26 = "26.1"
    DOCKER_26_CONTAINERD = "26.1-containerd"


@dataclass(frozen=True)
class EngineSpec:
    """What an engine kind is, and what `docker info` shows for it."""

    kind: EngineKind
    debian: int
    version_prefix: str
    api_version: str
    containerd_store: bool

    @property
    def api(self) -> tuple[int, int]:
        """The API version as a comparable pair."""
        major, minor = self.api_version.split(".")
        return int(major), int(minor)


SPECS: Final = {
    EngineKind.DOCKER_20: EngineSpec(EngineKind.DOCKER_20, 12, "20.10.", "1.41", False),
    EngineKind.DOCKER_26: EngineSpec(EngineKind.DOCKER_26, 13, "26.1.", "1.45", False),
    EngineKind.DOCKER_26_CONTAINERD: EngineSpec(
        EngineKind.DOCKER_26_CONTAINERD, 13, "26.1.", "1.45", True
    ),
}


def selected_kind() -> EngineKind:
    """The kind ``RECEIVER_TEST_ENGINE`` names (20.10 when unset)."""
    name = os.environ.get(ENGINE_ENV, "").strip() or EngineKind.DOCKER_20
    try:
        return EngineKind(name)
    except ValueError:
        known = ", ".join(kind.value for kind in EngineKind)
        raise StackUnavailable(f"{ENGINE_ENV}={name!r} is not one of {known}") from None


# -- Debian 13's binaries -----------------------------------------------------------------


def cache_dir() -> Path:
    """``$RECEIVER_ENGINE_CACHE`` or /var/cache/workspace-image-receiver/engines."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def debian13_bin(cache: Path | None = None) -> Path:
    """The folder of links to give dockerd first on its PATH; fetched at most once."""
    final = (cache or cache_dir()) / "debian13"
    if (final / "bin" / "dockerd").exists():
        return final / "bin"
    with file_lock(final.with_name("debian13.lock")):
        if not (final / "bin" / "dockerd").exists():  # another run may have finished
            _fetch_debian13(final)
    return final / "bin"


def _fetch_debian13(final: Path) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool, path=SYSTEM_PATH) is None:
            raise StackUnavailable(f"{tool} not found: Debian 13's engine comes through apt")
    if not Path(DEBIAN_KEYRING).exists():
        raise StackUnavailable(f"{DEBIAN_KEYRING} missing (install debian-archive-keyring)")
    for stale in final.parent.glob("debian13.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="debian13.partial-", dir=final.parent))
    staging.chmod(0o755)
    try:
        _download_and_unpack(staging, debian_mirror(host_suite()))
        shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover
        # The folder appears under its name only once complete.
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_and_unpack(staging: Path, mirror: str) -> None:
    log, apt, debs, root, bin_dir = (
        staging / "fetch.log",
        staging / "apt",
        staging / "debs",
        staging / "root",
        staging / "bin",
    )
    env = {
        **os.environ,
        "APT_CONFIG": str(_apt_config(apt, mirror)),
        "LC_ALL": "C",
        "DEBIAN_FRONTEND": "noninteractive",
    }
    for folder in (debs, root, bin_dir):
        folder.mkdir()
    # apt downloads as its sandbox user `_apt`, which must be able to write there.
    with contextlib.suppress(KeyError, OSError):
        user = pwd.getpwnam("_apt")
        os.chown(debs, user.pw_uid, user.pw_gid)
    _run(["apt-get", "-q", "update"], log, env=env)
    _run(["apt-get", "-q", "download", *DEBIAN13_PACKAGES], log, env=env, cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], log)
    for name, inside in _DEBIAN13_LINKS.items():
        if not (root / inside).exists():
            raise StackUnavailable(f"Debian 13's packages hold no {inside}")
        # Relative links keep working once the folder is renamed into place.
        (bin_dir / name).symlink_to(Path("..") / "root" / inside)
    if SYSTEM_RUNC.exists():
        (bin_dir / "runc").symlink_to(SYSTEM_RUNC)
    shutil.rmtree(debs)
    shutil.rmtree(apt)
    shutil.rmtree(root / "usr" / "share", ignore_errors=True)


def _apt_config(apt: Path, mirror: str) -> Path:
    """An apt configuration of its own: trixie main from `mirror`, nothing of the system's."""
    for sub in ("etc/apt.conf.d", "etc/preferences.d", "lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    (apt / "etc" / "sources.list").write_text(
        f"deb [signed-by={DEBIAN_KEYRING}] {mirror} {DEBIAN13_SUITE} main\n"
    )
    settings = {
        "Dir::Etc": f"{apt}/etc/",
        "Dir::State": f"{apt}/",
        "Dir::State::Lists": f"{apt}/lists/",
        "Dir::State::status": f"{apt}/status",
        "Dir::Cache": f"{apt}/cache/",
        "Acquire::Languages": "none",
        **_inherited_apt_settings(),
    }
    conf = apt / "apt.conf"
    conf.write_text("".join(f"{key} {json.dumps(value)};\n" for key, value in settings.items()))
    return conf


# The system's apt settings the private configuration keeps: a proxy, and the date checks
# a snapshot mirror needs turned off.
_INHERITED_APT_KEYS: Final = (
    "Acquire::http::Proxy",
    "Acquire::https::Proxy",
    "Acquire::Check-Valid-Until",
    "Acquire::Check-Date",
    "Acquire::ForceIPv4",
    "Acquire::Retries",
)


def _inherited_apt_settings() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "APT_CONFIG"}
    try:
        dump = subprocess.run(
            ["apt-config", "dump"], capture_output=True, text=True, env=env, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    found: dict[str, str] = {}
    for line in dump.splitlines():
        key, _, rest = line.strip().partition(" ")
        value = rest.removesuffix(";").strip('"')
        if key in _INHERITED_APT_KEYS and value:
            found[key] = value
    return found


def _run(
    args: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        done = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=FETCH_TIMEOUT,
            check=False,
        )
    if done.returncode != 0:
        raise StackUnavailable(f"{' '.join(args)} exited {done.returncode}:\n{log_tail(log)}")


# -- private engines ------------------------------------------------------------------------


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


class PrivateEngine(Closing):
    """A private dockerd of one kind in a temporary directory of its own."""

    def __init__(self, kind: EngineKind, tmp: Path, *, insecure_registries: tuple[str, ...]):
        self.kind = kind
        self.spec = SPECS[kind]
        self.tmp = tmp
        self.docker_host = f"unix://{tmp / 'docker.sock'}"
        self.log_path = tmp / "dockerd.log"
        self.namespace = f"rte-{uuid.uuid4().hex[:8]}"
        self._insecure = insecure_registries
        self._dockerd: subprocess.Popen[bytes] | None = None
        self._containerd: subprocess.Popen[bytes] | None = None
        self._closed = False

    @classmethod
    def start(
        cls,
        kind: EngineKind,
        workdir: Path | None = None,
        *,
        insecure_registries: tuple[str, ...] = (),
    ) -> PrivateEngine:
        """Start a dockerd of `kind` (under `workdir`, else /tmp) and return once it answers."""
        if os.geteuid() != 0:
            raise StackUnavailable("starting a private dockerd needs root")
        parent = workdir or Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="eng-", dir=parent))
        if len(str(tmp)) + len(_LONGEST_SOCKET_SUFFIX) > _SOCKET_PATH_MAX:
            tmp.rmdir()
            if workdir is not None:
                raise StackUnavailable(f"work dir {workdir} is too long for unix socket paths")
            tmp = Path(tempfile.mkdtemp(prefix="eng-", dir="/tmp"))
        engine = cls(kind, tmp, insecure_registries=insecure_registries)
        try:
            engine._start()
        except BaseException:
            engine.close()
            raise
        return engine

    def _binaries(self) -> tuple[str, str]:
        """The dockerd to run and the PATH to run it with."""
        if self.spec.debian == 12:
            if not SYSTEM_DOCKERD.exists():
                raise StackUnavailable(f"{SYSTEM_DOCKERD} missing (install docker.io)")
            return str(SYSTEM_DOCKERD), SYSTEM_PATH
        bin_dir = debian13_bin()
        return str(bin_dir / "dockerd"), f"{bin_dir}:{SYSTEM_PATH}"

    def _start(self) -> None:
        dockerd, path = self._binaries()
        if shutil.which("runc", path=path) is None:
            raise StackUnavailable("no runc on dockerd's PATH (install Debian 12's runc)")
        env = {"PATH": path, "HOME": str(self.tmp), "LC_ALL": "C"}
        data_root, exec_root = self.tmp / "data", self.tmp / "x"
        config: dict[str, Any] = {"insecure-registries": list(self._insecure)}
        if self.spec.debian == 12:
            # Keeps 20.10 from writing its trust key to /etc/docker/key.json.
            config["deprecated-key-path"] = str(self.tmp / "key.json")
        if self.spec.containerd_store:
            config["features"] = {"containerd-snapshotter": True}
        # Always a config file of our own, so /etc/docker/daemon.json is never read.
        config_file = self.tmp / "daemon.json"
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        args = [
            dockerd,
            f"--config-file={config_file}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            f"--host={self.docker_host}",
            f"--data-root={data_root}",
            f"--exec-root={exec_root}",
            f"--pidfile={self.tmp / 'docker.pid'}",
            f"--containerd-namespace={self.namespace}",
            f"--containerd-plugins-namespace={self.namespace}-plugins",
            "--shutdown-timeout=5",
        ]
        if SYSTEM_CONTAINERD_SOCKET.exists():
            # dockerd would use a system containerd (another version, shared): run this
            # kind's own instead.
            args.append(f"--containerd={self._start_containerd(data_root, exec_root, env)}")
        self._dockerd = spawn(args, self.log_path, env=env)
        proc = self._dockerd
        wait_until(
            lambda: engine_answers(self.docker_host),
            timeout=START_TIMEOUT,
            what=f"dockerd {self.kind}",
            alive=lambda: proc.poll() is None,
            log=self.log_path,
        )

    def _start_containerd(self, data_root: Path, exec_root: Path, env: dict[str, str]) -> Path:
        state = exec_root / "containerd"
        state.mkdir(parents=True)
        toml = state / "containerd.toml"
        toml.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{data_root / "containerd" / "daemon"}"',
                    f'state = "{state / "daemon"}"',
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                    "[grpc]",
                    f'  address = "{state / "containerd.sock"}"',
                    "",
                ]
            )
        )
        sock, log = state / "containerd.sock", self.tmp / "containerd.log"
        binary = shutil.which("containerd", path=env["PATH"]) or "containerd"
        self._containerd = proc = spawn([binary, "--config", str(toml)], log, env=env)
        wait_until(
            lambda: _socket_answers(sock),
            timeout=START_TIMEOUT,
            what="containerd",
            alive=lambda: proc.poll() is None,
            log=log,
        )
        return sock

    def close(self) -> None:
        """Remove every container, stop the daemons, and leave nothing of this engine."""
        if self._closed:
            return
        self._closed = True
        if self._dockerd is not None and self._dockerd.poll() is None:
            # Force-removing first spares dockerd's shutdown each container's stop timeout.
            with contextlib.suppress(Exception):
                api = docker.APIClient(base_url=self.docker_host, timeout=30, version="auto")
                try:
                    for container in api.containers(all=True, quiet=True):
                        with contextlib.suppress(docker.errors.APIError):
                            api.remove_container(container["Id"], v=True, force=True)
                finally:
                    api.close()
        for proc in (self._dockerd, self._containerd):
            if proc is not None:
                stop_process(proc)
        self._dockerd = self._containerd = None
        _kill_leftover_shims(self.tmp)
        remove_tree(self.tmp)


def _kill_leftover_shims(tmp: Path) -> None:
    """Kill the shims a killed engine left (each names its exec root), and remove the
    sockets they leave in /run/containerd/s (a shim removes its own only when it exits)."""
    sockets = []
    for argv in kill_processes_mentioning(f"{tmp}/").values():
        flags = {word: argv[i + 1] for i, word in enumerate(argv[:-1]) if word.startswith("-")}
        if {"-namespace", "-id", "-address"} <= flags.keys():
            # containerd's shim.SocketAddress: sha256 of address/namespace/id.
            joined = os.path.join(flags["-address"], flags["-namespace"], flags["-id"])
            sockets.append(SHIM_SOCKET_DIR / hashlib.sha256(joined.encode()).hexdigest())
    if sockets:
        time.sleep(0.2)
    for path in sockets:
        with contextlib.suppress(OSError):
            if path.is_socket():
                path.unlink()


def main(argv: list[str] | None = None) -> int:
    """`fetch`: bring Debian 13's engine into the cache (what scripts/test does first)."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["fetch"]:
        print("usage: python -m tests.support.engines fetch", file=sys.stderr)
        return 2
    try:
        print(debian13_bin())
    except StackUnavailable as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
