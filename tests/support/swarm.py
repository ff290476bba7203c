"""A real multi-node Docker Swarm on one machine, for integration tests and the demo.

As root, ``Swarm.start(nodes=3)`` makes a Linux bridge on a free private /24, one network
namespace per node joined to it by a veth pair, a ``docker-registry`` on the bridge's
host-side address (port 5000) and one ``dockerd`` per namespace.  Node 1 initialises the
swarm and stays its only manager (unless ``managers`` says more); the others join as
workers.  Each engine listens on a unix socket on the host's filesystem, so the test
process reaches every node.  Images are made without Docker Hub: a rootfs holding the
host's static busybox is imported on node 1's engine and pushed to the bridge registry.

``close()`` (or leaving the ``with`` block) removes services, leaves the swarm, stops every
daemon by PID and deletes the namespaces, links, the FORWARD rule, mounts and folders.
``cleanup_leftovers()`` removes what an earlier run that died left behind.

This module must not import pytest: scripts outside the test suite use it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import docker.types

from tests.support.daemons import (
    Closing,
    StackUnavailable,
    engine_answers,
    log_tail,
    mounts_under,
    processes_mentioning,
    registry_config,
    spawn,
    stop_process,
    unmount_all,
)
from tests.support.stack import QUICK_STOP_CMD, Published, find_static_busybox, publish_image

__all__ = [
    "PREFIX",
    "QUICK_STOP_CMD",
    "REGISTRY_PORT",
    "Node",
    "Published",
    "StopMode",
    "Swarm",
    "SwarmUnavailable",
    "TaskContainer",
    "UpdateOutcome",
    "UpdateStatus",
    "cleanup_leftovers",
    "find_static_busybox",
    "htpasswd_line",
]

PREFIX = "rsw"
REGISTRY_PORT = 5000
SWARM_PORT = 2377
ENGINE_START_TIMEOUT = 30.0
REGISTRY_START_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0
# The bridge's /24 is taken from here, the first one that no host address or route
# overlaps.  (Swarm's own overlay pool, 10.0.0.0/8 from 10.0.0.0 up, lives only inside
# the node namespaces and never comes near.)
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
# Node i (1-based) gets host number NODE_HOST_BASE + i; the host side of the bridge is .1.
NODE_HOST_BASE = 10
# Unix socket paths are limited to 108 bytes; containerd puts
# "<exec-root>/containerd/containerd.sock.ttrpc" under each node's exec root.
_SOCKET_PATH_MAX = 100
_LONGEST_SOCKET_SUFFIX = "/n99/x/containerd/containerd.sock.ttrpc"
_RUN_HEX = 6
_NETNS_DIR = Path("/run/netns")
_SHIM_SOCKET_DIR = Path("/run/containerd/s")
_netns_dir_preexisted: bool | None = None  # as the first swarm of this process saw it
_netns_lock = threading.Lock()


StopMode = Literal["term", "kill", "freeze", "partition"]
# UpdateStatus.State values after which the swarm does nothing more by itself.
_FINAL_UPDATE_STATES = frozenset({"completed", "paused", "rollback_completed", "rollback_paused"})
_PROXY_VARS = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"})


class SwarmUnavailable(StackUnavailable):
    """This machine lacks something a swarm needs (root, dockerd, ip, busybox, ...)."""


@dataclass(frozen=True)
class TaskContainer:
    """A container of a service task on one node."""

    node: str
    container_id: str
    image: str  # Config.Image: the spec's image string, e.g. ref@sha256:...
    image_id: str
    status: str  # the container's State.Status: created, running, exited, ...


@dataclass(frozen=True)
class UpdateStatus:
    """A service's ``UpdateStatus``: state, start time and message."""

    state: str
    started_at: str
    message: str

    @classmethod
    def of(cls, service: Mapping[str, Any]) -> UpdateStatus | None:
        """Parse the ``UpdateStatus`` of an inspected service, if it has one."""
        raw = service.get("UpdateStatus")
        if not isinstance(raw, dict) or not raw.get("State"):
            return None
        return cls(
            state=str(raw["State"]),
            started_at=str(raw.get("StartedAt", "")),
            message=str(raw.get("Message", "")),
        )


@dataclass
class UpdateOutcome:
    """How a rolling update went: its final state and every state seen, timed."""

    state: str
    message: str
    elapsed: float
    # (seconds since the wait began, state, message) for each change seen.
    states: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        """Whether the wait ended before the update reached a final state."""
        return self.state not in _FINAL_UPDATE_STATES


# -- small host helpers ------------------------------------------------------------------


def _run(args: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
    """Run a command, return its stdout; raise with its stderr if `check` and it failed."""
    result = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def _daemon_env() -> dict[str, str]:
    # A proxy from the environment would make dockerd send the nodes' registry traffic
    # to an address no namespace can reach.
    return {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}


def _with_descendants(pids: Iterable[int]) -> list[int]:
    """`pids` and all their descendants (a shim's container processes name no marker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found and pid != os.getpid():
            found.append(pid)
            todo += children.get(pid, [])
    return found


def _kill_pids(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL each PID and wait until it has gone (zombies of others count as gone)."""
    killed: list[int] = []
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    deadline = time.monotonic() + timeout
    for pid in killed:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
    return killed


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@contextlib.contextmanager
def _host_lock(name: str, timeout: float = 30.0) -> Iterator[None]:
    """Hold a machine-wide lock: an abstract unix socket, gone when its holder is."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock.bind(f"\0{name}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lock {name} still held after {timeout:.0f}s") from None
                time.sleep(0.05)
        yield
    finally:
        sock.close()


def _used_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Networks of the host's IPv4 addresses and routes (all tables)."""
    used: list[ipaddress.IPv4Network] = []
    for line in _run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        words = line.split()
        if "inet" in words:
            used.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    route_types = {
        "local",
        "broadcast",
        "unicast",
        "unreachable",
        "blackhole",
        "prohibit",
        "throw",
        "anycast",
        "multicast",
        "nat",
    }
    for line in _run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        words = line.split()
        if not words:
            continue
        dst = words[1] if words[0] in route_types and len(words) > 1 else words[0]
        if dst == "default":
            continue
        with contextlib.suppress(ValueError):
            used.append(ipaddress.IPv4Network(dst, strict=False))
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_ipv4_networks()
    candidates = list(SUBNET_POOL.subnets(new_prefix=24))
    start = random.randrange(len(candidates))  # noqa: S311 - spreading, not security
    for candidate in candidates[start:] + candidates[:start]:
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise SwarmUnavailable(f"no free /24 left in {SUBNET_POOL}")


def _http_status(url: str, timeout: float = 1.0) -> int:
    """The HTTP status a GET of `url` answers, 0 if nothing answers (no proxy used)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return 0


@functools.cache
def _libcrypt() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lib


_crypt_lock = threading.Lock()


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd line with a bcrypt hash (the only kind docker-registry accepts)."""
    # glibc's libxcrypt (Debian's libcrypt1) does bcrypt; the crypt module is deprecated
    # and apache2-utils' htpasswd is not installed by default.
    try:
        lib = _libcrypt()
    except OSError as exc:
        raise SwarmUnavailable(f"no libcrypt for bcrypt hashes: {exc}") from exc
    with _crypt_lock:  # both calls return static buffers
        salt = lib.crypt_gensalt(b"$2y$", 5, None, 0)
        hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2"):
        raise SwarmUnavailable("libcrypt cannot make bcrypt hashes")
    return f"{user}:{hashed.decode()}"


# -- images ----------------------------------------------------------------------------


def _client(base_url: str, timeout: int = 60) -> docker.DockerClient:
    """A client for an engine that answers (construction asks its API version)."""
    return docker.DockerClient(base_url=base_url, timeout=timeout)


def _api(client: docker.DockerClient) -> Any:
    # types-docker leaves most service and image calls unannotated, which mypy --strict
    # refuses to call from typed code; this one door keeps that to a single place.
    return client.api


# -- nodes -----------------------------------------------------------------------------


class Node:
    """One swarm node: a network namespace on the bridge and the dockerd inside it."""

    def __init__(self, index: int, run: str, address: str, root: Path, role: str) -> None:
        self.index = index  # 1-based
        self.name = f"{run}-n{index}"  # netns name and the node's hostname
        self.address = address
        self.root = root
        self.role = role  # "manager" or "worker"
        self.veth_host = f"{run}-h{index}"
        self.veth_node = f"{run}-p{index}"
        self.node_id = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.partitioned = False
        self._client: docker.DockerClient | None = None
        # The engine's unix socket on the host, its address for a Docker client, and its
        # log (containerd's output goes there too).
        self.socket = root / "docker.sock"
        self.base_url = f"unix://{self.socket}"
        self.log = root / "dockerd.log"

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.address}, {self.role})"

    @property
    def constraint(self) -> str:
        """A placement constraint that pins a service to this node."""
        return f"node.hostname=={self.name}"

    @property
    def running(self) -> bool:
        """Whether the engine's process is alive (it may be frozen or cut off)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def client(self) -> docker.DockerClient:
        """A Docker client for this node's engine."""
        if self._client is None:
            raise RuntimeError(f"engine of {self.name} is not running")
        return self._client

    def dockerd_args(self, insecure: str) -> list[str]:
        """The command that starts this node's dockerd inside its namespace."""
        return [
            # `ip netns exec` would remount /sys, and dockerd then dies ("Devices cgroup
            # isn't mounted"); nsenter only switches the network namespace.
            "nsenter",
            f"--net=/run/netns/{self.name}",
            "unshare",
            "--uts",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.name,
            "dockerd",
            f"--config-file={self.root / 'daemon.json'}",
            f"--host={self.base_url}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'x'}",
            f"--pidfile={self.root / 'docker.pid'}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            f"--insecure-registry={insecure}",
            f"--containerd-namespace={self.name}",
            f"--containerd-plugins-namespace={self.name}-plugins",
            "--shutdown-timeout=2",
        ]


# -- the swarm -------------------------------------------------------------------------


class Swarm(Closing):
    """N dockerd nodes in one swarm on a private bridge, plus a registry; a context manager."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        managers: int = 1,
        heartbeat: float = 1.0,
        prefix: str = PREFIX,
        workdir: Path | None = None,
    ) -> None:
        if not 1 <= managers <= nodes <= 99:
            raise ValueError("need 1 <= managers <= nodes <= 99")
        self.size = nodes
        self.managers = managers
        self.heartbeat = heartbeat
        self.prefix = prefix
        self.run = f"{prefix}{uuid.uuid4().hex[:_RUN_HEX]}"
        self.root = (workdir or Path(tempfile.gettempdir())) / self.run
        self.bridge = f"{self.run}-br"
        self.subnet: ipaddress.IPv4Network | None = None
        self.host_address = ""
        self.registry = ""
        self.nodes: list[Node] = []
        self.timings: dict[str, float] = {}
        self._registries: list[subprocess.Popen[bytes]] = []
        self._next_registry_port = REGISTRY_PORT
        self._forward_rule: list[str] = []
        self._alive: socket.socket | None = None
        self._made_netns_dir = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(cls, nodes: int = 3, **options: Any) -> Swarm:
        """Build and start a swarm (`options` as the constructor takes them); raise
        SwarmUnavailable if this machine cannot."""
        swarm = cls(nodes, **options)
        try:
            swarm._start()
        except BaseException:
            swarm.close()
            raise
        return swarm

    @staticmethod
    def check_host() -> None:
        """Raise SwarmUnavailable unless this machine can run a swarm."""
        if os.geteuid() != 0:
            raise SwarmUnavailable("a swarm needs root (namespaces, bridge, iptables)")
        for tool, package in [
            ("dockerd", "docker.io"),
            ("docker-registry", "docker-registry"),
            ("ip", "iproute2"),
            ("iptables", "iptables"),
            ("nsenter", "util-linux"),
            ("unshare", "util-linux"),
            ("hostname", "hostname"),
        ]:
            if shutil.which(tool) is None:
                raise SwarmUnavailable(f"no {tool} on PATH (apt-get install {package})")
        if find_static_busybox() is None:
            raise SwarmUnavailable("no statically linked busybox (apt-get install busybox-static)")

    def _start(self) -> None:
        self.check_host()
        if len(str(self.root)) + len(_LONGEST_SOCKET_SUFFIX) > _SOCKET_PATH_MAX:
            raise SwarmUnavailable(f"work dir {self.root} is too long for unix socket paths")
        t0 = time.monotonic()
        # Held until close(): tells cleanup_leftovers() in any process that this run lives.
        self._alive = _claim_run(self.run)
        self.root.mkdir(parents=True)
        (self.root / "owner").write_text(f"{os.getpid()}\n")  # marks the folder as ours
        self._make_network()
        t1 = time.monotonic()
        self.registry = self.start_registry("registry")
        t2 = time.monotonic()
        for i in range(1, self.size + 1):
            node_root = self.root / f"n{i}"
            node_root.mkdir()
            (node_root / "daemon.json").write_text("{}\n")
            address = str(self.subnet_host(NODE_HOST_BASE + i))
            role = "manager" if i <= self.managers else "worker"
            self.nodes.append(Node(i, self.run, address, node_root, role))
        self._add_netns()
        t3 = time.monotonic()
        for node in self.nodes:
            self._spawn_engine(node)
        for node in self.nodes:
            self._await_engine(node)
        t4 = time.monotonic()
        self._form_swarm()
        t5 = time.monotonic()
        self.timings.update(
            network=t1 - t0 + t3 - t2,
            registry=t2 - t1,
            engines=t4 - t3,
            swarm=t5 - t4,
            setup=t5 - t0,
        )

    def subnet_host(self, number: int) -> ipaddress.IPv4Address:
        """The address with host part `number` in the bridge's subnet."""
        assert self.subnet is not None
        return self.subnet.network_address + number

    def _make_network(self) -> None:
        # The lock makes the free-subnet check and the address assignment one step for
        # concurrent runs (another test session, another helper).
        with _host_lock(f"{self.prefix}-subnet"):
            self.subnet = _free_subnet()
            self.host_address = str(self.subnet_host(1))
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.host_address}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        # With br_netfilter, bridged frames cross FORWARD, whose policy may drop them.
        self._forward_rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        _run(["iptables", "-I", self._forward_rule[0], "1", *self._forward_rule[1:]])

    def _add_netns(self) -> None:
        # The first `ip netns add` on a machine makes /run/netns and bind-mounts it onto
        # itself; close() undoes that when this process found no /run/netns and the
        # folder is empty again (so the last of several swarms removes it).
        global _netns_dir_preexisted
        with _netns_lock:
            if _netns_dir_preexisted is None:
                _netns_dir_preexisted = _NETNS_DIR.exists()
        self._made_netns_dir = not _netns_dir_preexisted
        for node in self.nodes:
            _run(["ip", "netns", "add", node.name])
            _run(
                [
                    "ip",
                    "link",
                    "add",
                    node.veth_host,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    node.veth_node,
                    "netns",
                    node.name,
                ]
            )
            _run(["ip", "link", "set", node.veth_host, "master", self.bridge, "up"])
            _run(
                ["ip", "-n", node.name, "addr", "add", f"{node.address}/24", "dev", node.veth_node]
            )
            _run(["ip", "-n", node.name, "link", "set", node.veth_node, "up"])
            _run(["ip", "-n", node.name, "link", "set", "lo", "up"])

    def _spawn_engine(self, node: Node) -> None:
        assert self.subnet is not None
        node.proc = spawn(node.dockerd_args(str(self.subnet)), node.log, env=_daemon_env())

    def _await_engine(self, node: Node) -> None:
        assert node.proc is not None
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while True:
            if node.proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd of {node.name} exited with {node.proc.returncode}; "
                    f"tail of {node.log}:\n{log_tail(node.log)}"
                )
            if engine_answers(node.base_url):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"dockerd of {node.name} did not answer within {ENGINE_START_TIMEOUT:.0f}s;"
                    f" tail of {node.log}:\n{log_tail(node.log)}"
                )
            time.sleep(0.05)
        node._client = _client(node.base_url)

    def _form_swarm(self) -> None:
        first = self.nodes[0]
        first.client.swarm.init(
            advertise_addr=first.address,
            listen_addr=f"{first.address}:{SWARM_PORT}",
            # A stopped node is marked down after a few heartbeats (default 5 s each).
            dispatcher_heartbeat_period=int(self.heartbeat * 1e9),
        )
        tokens = first.client.api.inspect_swarm()["JoinTokens"]
        remote = [f"{first.address}:{SWARM_PORT}"]

        def join(node: Node) -> None:
            node.client.swarm.join(
                remote_addrs=remote,
                join_token=tokens["Manager" if node.role == "manager" else "Worker"],
                listen_addr=f"{node.address}:{SWARM_PORT}",
                advertise_addr=node.address,
            )

        # Managers join one by one (each one changes the raft membership); workers at once.
        for node in self.nodes[1:]:
            if node.role == "manager":
                join(node)
        workers = [n for n in self.nodes if n.role == "worker"]
        if workers:
            with ThreadPoolExecutor(len(workers)) as pool:
                list(pool.map(join, workers))
        for node in self.nodes:
            node.node_id = str(node.client.info()["Swarm"]["NodeID"])
        self.wait_nodes("ready", self.nodes, timeout=30)

    def close(self) -> None:
        """Remove services, leave the swarm, stop everything, delete all that was made."""
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        for node in self.nodes:
            if node.frozen and node.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGCONT)
                node.frozen = False
            if node.partitioned:
                _run(["ip", "link", "set", node.veth_host, "up"], check=False)
                node.partitioned = False
        live = [n for n in self.nodes if n.running and n._client is not None]
        with contextlib.suppress(Exception):
            self.remove_services()
        if live:
            with ThreadPoolExecutor(len(live)) as pool:
                list(pool.map(_quiet_node, live))
        t1 = time.monotonic()
        # Workers leave first (all at once), then the managers one by one, node 1 (the
        # leader) last: with the leader leaving first, the others wait out an election
        # and then quorum (measured: 34 s instead of 3 s for 3 managers).
        workers = [n for n in live if n.role == "worker"]
        if workers:
            with ThreadPoolExecutor(len(workers)) as pool:
                list(pool.map(_leave, workers))
        for node in reversed(live):
            if node.role == "manager":
                _leave(node)
        t2 = time.monotonic()
        for node in self.nodes:
            if node._client is not None:
                node._client.close()
                node._client = None
        # SIGTERM every engine at once; each waits on its own.
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                stop_process(node.proc)
                node.proc = None
        t3 = time.monotonic()
        for proc in self._registries:
            stop_process(proc, timeout=5)
        self._registries.clear()
        _remove_run(self.run, self.root, [n.name for n in self.nodes], self.bridge)
        if self._made_netns_dir:
            _remove_empty_netns_dir()
        if self._alive is not None:
            self._alive.close()
            self._alive = None
        t4 = time.monotonic()
        self.timings.update(
            teardown_services=t1 - t0,
            teardown_leave=t2 - t1,
            teardown_engines=t3 - t2,
            teardown_rest=t4 - t3,
            teardown=t4 - t0,
        )

    # -- registries and images ---------------------------------------------------------

    def start_registry(self, name: str, users: Mapping[str, str] | None = None) -> str:
        """Start a docker-registry on the bridge (next port from 5000); its host:port.

        With `users` (name to password) it asks for htpasswd basic auth.
        """
        port = self._next_registry_port
        self._next_registry_port += 1
        address = f"{self.host_address}:{port}"
        extra: dict[str, Any] = {}
        if users:
            htpasswd = self.root / f"{name}.htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in users.items()))
            extra["auth"] = {"htpasswd": {"realm": name, "path": str(htpasswd)}}
        settings = registry_config(address, self.root / name, **extra)
        config = self.root / f"{name}.yml"
        config.write_text(json.dumps(settings))  # JSON is YAML
        log = self.root / f"{name}.log"
        proc = spawn(["docker-registry", "serve", str(config)], log, env=_daemon_env())
        self._registries.append(proc)
        deadline = time.monotonic() + REGISTRY_START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if _http_status(f"http://{address}/v2/") in (200, 401):
                return address
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry {name} did not start; tail of {log}:\n{log_tail(log)}")

    def publish(
        self,
        repository: str,
        tag: str = "latest",
        *,
        version: str,
        cmd: list[str] | None = None,
        entrypoint: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        registry: str | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Published:
        """Build a busybox image whose /version holds `version` on node 1, push it, untag it.

        The push goes to the bridge registry unless `registry` names another; `auth` is
        the (username, password) to push with.  CMD defaults to QUICK_STOP_CMD.
        """
        changes = [f"ENV {k}={json.dumps(v)}" for k, v in (env or {}).items()]
        changes += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in (labels or {}).items()]
        if entrypoint is not None:
            changes.append(f"ENTRYPOINT {json.dumps(entrypoint)}")
        if cmd is not None or entrypoint is None:
            changes.append(f"CMD {json.dumps(cmd if cmd is not None else QUICK_STOP_CMD)}")
        return publish_image(
            self.nodes[0].client,
            f"{registry or self.registry}/{repository}",
            tag,
            version=version,
            changes=changes,
            auth=auth,
        )

    # -- nodes -------------------------------------------------------------------------

    @property
    def manager(self) -> Node:
        """Node 1, the swarm's first manager."""
        return self.nodes[0]

    def node(self, name: str) -> Node:
        """The node with this name (its hostname), e.g. ``swarm.nodes[1].name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def node_states(self) -> dict[str, str]:
        """Each node's ``Status.State`` (ready, down, ...) as the manager sees it."""
        states: dict[str, str] = {}
        for raw in self.manager.client.api.nodes():
            hostname = str(raw.get("Description", {}).get("Hostname", ""))
            states[hostname] = str(raw.get("Status", {}).get("State", ""))
        return states

    def wait_nodes(self, state: str, nodes: Iterable[Node], timeout: float) -> float:
        """Wait until the manager sees every node in `state`; return the seconds it took."""
        names = {n.name for n in nodes}
        t0 = time.monotonic()
        while True:
            states = self.node_states()
            if all(states.get(name) == state for name in names):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"nodes not {state} after {timeout:.0f}s: {states}")
            time.sleep(0.05)

    def stop_node(self, node: Node, how: StopMode = "term") -> None:
        """Take a node out: stop its dockerd, kill it, freeze it or cut its link.

        ``term`` stops dockerd politely (it stops its containers: a node shut down);
        ``kill`` SIGKILLs dockerd (containerd and the containers keep running);
        ``freeze`` SIGSTOPs dockerd (a hung node); ``partition`` takes its veth down
        (a network split: the node and its containers run on, unreachable).
        """
        # With one manager, stopping node 1 takes the control plane (node_states() etc.)
        # away until start_node().
        if how not in ("term", "kill", "freeze", "partition"):
            raise ValueError(f"unknown stop mode {how!r}")
        if how == "partition":
            _run(["ip", "link", "set", node.veth_host, "down"])
            node.partitioned = True
            return
        if node.proc is None:
            return
        if how == "freeze":
            node.proc.send_signal(signal.SIGSTOP)
            node.frozen = True
            return
        if node._client is not None:
            node._client.close()
            node._client = None
        if how == "kill":
            node.proc.kill()
            node.proc.wait()
        else:
            stop_process(node.proc)
        node.proc = None

    def start_node(self, node: Node) -> None:
        """Bring a stopped node back (same data root, so it rejoins the swarm by itself)."""
        if node.partitioned:
            _run(["ip", "link", "set", node.veth_host, "up"])
            node.partitioned = False
        if node.frozen and node.proc is not None:
            node.proc.send_signal(signal.SIGCONT)
            node.frozen = False
        if node.proc is None:
            self._spawn_engine(node)
            self._await_engine(node)

    # -- services ----------------------------------------------------------------------

    def create_pinned_service(
        self,
        name: str,
        image: str,
        node: Node,
        *,
        command: list[str] | None = None,
        update_config: docker.types.UpdateConfig | None = None,
        rollback_config: docker.types.RollbackConfig | None = None,
        stop_grace_period: float | None = None,
        labels: Mapping[str, str] | None = None,
        env: Sequence[str] | None = None,
    ) -> str:
        """Create a 1-replica dnsrr service (no ports) pinned to `node`; return its id.

        Virtual-IP services need IPVS, which this kernel lacks, hence ``dnsrr``.
        """
        kwargs: dict[str, Any] = {}
        if command is not None:
            kwargs["command"] = command
        if stop_grace_period is not None:
            kwargs["stop_grace_period"] = int(stop_grace_period * 1e9)
        if env is not None:
            kwargs["env"] = list(env)
        services: Any = self.manager.client.services  # create() is unannotated
        service = services.create(
            image,
            name=name,
            constraints=[node.constraint],
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            mode=docker.types.ServiceMode("replicated", replicas=1),
            update_config=update_config,
            rollback_config=rollback_config,
            labels=dict(labels or {}),
            **kwargs,
        )
        return str(service.id)

    def remove_services(self) -> None:
        """Remove every service (through node 1)."""
        api = _api(self.manager.client)
        for service in api.services():
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_service(service["ID"])

    def update_image(
        self,
        service: str,
        image: str,
        *,
        update_config: docker.types.UpdateConfig | None = None,
        client: docker.DockerClient | None = None,
    ) -> UpdateStatus | None:
        """Start a rolling update of `service` to `image`; the status before, for wait_update.

        Sent through `client` (default: node 1's), whose stored credentials for the
        image's registry, if any, go along as ``X-Registry-Auth``.  The current spec
        is fetched and kept (docker-py's ``fetch_current_spec``); only the image changes.
        """
        api = _api(client or self.manager.client)
        current = api.inspect_service(service)
        previous = UpdateStatus.of(current)
        api.update_service(
            current["ID"],
            version=current["Version"]["Index"],
            task_template=docker.types.TaskTemplate(
                container_spec=docker.types.ContainerSpec(image=image)
            ),
            update_config=update_config,
            fetch_current_spec=True,
        )
        return previous

    def update_status(self, service: str) -> UpdateStatus | None:
        """The service's current ``UpdateStatus``, if it has one."""
        return UpdateStatus.of(_api(self.manager.client).inspect_service(service))

    def wait_update(
        self,
        service: str,
        *,
        previous: UpdateStatus | None,
        timeout: float,
    ) -> UpdateOutcome:
        """Poll until the update started after `previous` reaches a final state.

        `previous` is what ``update_status()`` (or ``update_image()``) gave before the
        update call: a status with the same start time is the old one.
        """
        return self.wait_updates({service: previous}, timeout=timeout)[service]

    def wait_updates(
        self, previous: Mapping[str, UpdateStatus | None], *, timeout: float
    ) -> dict[str, UpdateOutcome]:
        """wait_update() for several services at once (service name to previous status)."""
        t0 = time.monotonic()
        outcomes = {name: UpdateOutcome(state="", message="", elapsed=0.0) for name in previous}
        pending = set(previous)
        while pending:
            now = time.monotonic() - t0
            for name in sorted(pending):
                status = self.update_status(name)
                before = previous[name]
                stale = (
                    before is not None
                    and status is not None
                    and status.started_at == before.started_at
                )
                if status is None or stale:
                    continue
                outcome = outcomes[name]
                if not outcome.states or outcome.states[-1][1:] != (status.state, status.message):
                    outcome.states.append((round(now, 2), status.state, status.message))
                outcome.state, outcome.message = status.state, status.message
                outcome.elapsed = now
                if status.state in _FINAL_UPDATE_STATES:
                    pending.discard(name)
            if now > timeout:
                break
            if pending:
                time.sleep(0.1)
        for name in pending:
            outcomes[name].elapsed = time.monotonic() - t0
        return outcomes

    def service_containers(self, service: str, *, running_only: bool = True) -> list[TaskContainer]:
        """The containers of `service`'s tasks on every node whose engine answers."""
        found: list[TaskContainer] = []
        for node in self.nodes:
            if not node.running or node.frozen or node._client is None:
                continue
            containers = node.client.containers.list(
                all=not running_only,
                filters={"label": f"com.docker.swarm.service.name={service}"},
            )
            for container in containers:
                attrs = container.attrs
                found.append(
                    TaskContainer(
                        node=node.name,
                        container_id=str(container.id),
                        image=str(attrs["Config"]["Image"]),
                        image_id=str(attrs["Image"]),
                        status=str(attrs["State"]["Status"]),
                    )
                )
        return found

    def wait_running(self, service: str, image_id: str, timeout: float, replicas: int = 1) -> float:
        """Wait until exactly `replicas` containers of `service` run, all of `image_id`."""
        t0 = time.monotonic()
        while True:
            running = self.service_containers(service)
            if len(running) == replicas and all(c.image_id == image_id for c in running):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{service} not on {image_id} after {timeout:.0f}s: {running}")
            time.sleep(0.1)

    def tasks(self, service: str) -> list[dict[str, Any]]:
        """The service's tasks as the manager reports them (raw Engine API JSON)."""
        result: list[dict[str, Any]] = _api(self.manager.client).tasks(filters={"service": service})
        return result


def _leave(node: Node) -> None:
    with contextlib.suppress(Exception):
        node.client.swarm.leave(force=True)


def _quiet_node(node: Node) -> None:
    # Force-removing the task containers spares each its stop grace period at shutdown.
    with contextlib.suppress(Exception):
        for container in node.client.containers.list(all=True):
            with contextlib.suppress(docker.errors.APIError):
                node.client.api.remove_container(str(container.id), v=True, force=True)


# -- removal, also of what a dead run left -----------------------------------------------


def _iptables_rules_for(bridge: str) -> list[list[str]]:
    """FORWARD rules (as ``iptables -D`` arguments) that name `bridge`."""
    result = subprocess.run(
        ["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=False
    )
    rules: list[list[str]] = []
    for line in result.stdout.splitlines():
        words = line.split()
        if words[:1] == ["-A"] and bridge in words:
            rules.append(words[1:])
    return rules


def _shim_socket(pid: int) -> Path | None:
    """The socket a containerd shim made outside our folders, which a killed one leaves.

    containerd 1.6 puts it at /run/containerd/s/<hex sha256 of "ADDRESS/NAMESPACE/ID">,
    whatever the exec root; a shim that exits politely removes it itself.
    """
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if not args or not args[0].endswith("containerd-shim-runc-v2"):
        return None
    opts = dict(zip(args[1::2], args[2::2], strict=False))
    if not {"-namespace", "-id", "-address"} <= opts.keys():
        return None
    key = f"{opts['-address']}/{opts['-namespace']}/{opts['-id']}"
    return _SHIM_SOCKET_DIR / hashlib.sha256(key.encode()).hexdigest()


def _unmounted(root: Path) -> list[str]:
    points = mounts_under(root)
    unmount_all(root)
    return points


def _remove_run(run: str, root: Path, netns: Sequence[str], bridge: str) -> list[str]:
    """Remove all that run `run` may have left: processes, mounts, net objects, folder."""
    removed: list[str] = []
    # Daemons of the run name its folder or its namespaces on their command lines:
    # dockerd, its containerd, the shims, docker-registry.
    markers = [f"{root}/".encode(), f"/run/netns/{run}-".encode()]
    pids = _with_descendants(
        pid for marker in markers for pid in processes_mentioning(marker.decode())
    )
    shim_sockets = [path for path in map(_shim_socket, pids) if path is not None]
    removed += [f"pid {pid}" for pid in _kill_pids(pids)]
    for path in shim_sockets:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(f"socket {path}")
    removed += [f"mount {p}" for p in _unmounted(root)]
    for name in netns:
        if (
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, check=False
            ).returncode
            == 0
        ):
            removed.append(f"netns {name}")
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    for line in links.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@", 1)[0]
        if (
            name.startswith(f"{run}-")
            and subprocess.run(
                ["ip", "link", "del", name], capture_output=True, check=False
            ).returncode
            == 0
        ):
            removed.append(f"link {name}")
    for rule in _iptables_rules_for(bridge):
        if (
            subprocess.run(["iptables", "-D", *rule], capture_output=True, check=False).returncode
            == 0
        ):
            removed.append(f"rule {' '.join(rule)}")
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
        removed.append(f"dir {root}")
    return removed


def _remove_empty_netns_dir() -> None:
    with contextlib.suppress(OSError):
        if not any(_NETNS_DIR.iterdir()):
            if str(_NETNS_DIR) in mounts_under(Path("/run")):
                subprocess.run(["umount", str(_NETNS_DIR)], capture_output=True, check=False)
            _NETNS_DIR.rmdir()


def _claim_run(run: str) -> socket.socket:
    """Bind the run's abstract unix socket: the run lives while some process holds it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0{run}-alive")
    except OSError:
        sock.close()
        raise
    return sock


def _run_alive(run: str) -> bool:
    try:
        _claim_run(run).close()
    except OSError:
        return True
    return False


def cleanup_leftovers(prefix: str = PREFIX, workdir: Path | None = None) -> list[str]:
    """Remove what earlier swarms with this prefix left, unless their process still runs.

    A run's pieces are found by name: ``<workdir>/<prefix>XXXXXX`` folders (holding an
    ``owner`` file), ``<prefix>XXXXXX-*`` namespaces and links, FORWARD rules naming
    ``<prefix>XXXXXX-br``.  Returns what it removed.
    """
    pattern = re.compile(rf"^({re.escape(prefix)}[0-9a-f]{{{_RUN_HEX}}})(?:-|$)")
    parent = workdir or Path(tempfile.gettempdir())
    runs: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = pattern.match(entry.name)
            if match and match.group(1) == entry.name and (entry / "owner").exists():
                runs.setdefault(entry.name, [])
    netns_out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    for line in netns_out.splitlines():
        name = line.split()[0] if line.split() else ""
        match = pattern.match(name)
        if match:
            runs.setdefault(match.group(1), []).append(name)
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    for line in links.splitlines():
        parts = line.split(":", 2)
        match = pattern.match(parts[1].strip()) if len(parts) > 1 else None
        if match:
            runs.setdefault(match.group(1), [])
    rules = subprocess.run(
        ["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=False
    ).stdout
    for word in rules.split():
        match = pattern.match(word)
        if match:
            runs.setdefault(match.group(1), [])
    removed: list[str] = []
    for run, netns in sorted(runs.items()):
        if _run_alive(run):
            continue
        root = parent / run
        removed += _remove_run(run, root, netns, f"{run}-br")
    if removed:
        # The dead run may have been the one that made /run/netns (see Swarm._add_netns);
        # an empty one is harmless to remove: `ip netns add` makes it again.
        _remove_empty_netns_dir()
    return removed
