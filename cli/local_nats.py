"""The local NATS cluster of `cargotrace up --cluster N`: N nodes with JetStream and MQTT, as children.

Everything lives in ``settings.nats_dir``: one config, store directory, pid file and log per node,
and the shared ``accounts.conf`` every node includes (written by ``devices.nats_accounts``; a
change is applied by SIGHUP, without a restart). Ports follow ``settings.nats_port_base``
(see runtime/settings.py). The process helpers are Mosquitto's (cli/local_broker.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.local_broker import _alive, _children, _find_binary, _port_answers, _tail
from devices.broker_accounts import BrokerError
from runtime.settings import Settings

# Forming a cluster and electing a JetStream meta leader takes seconds; on a loaded 2-core
# machine it has taken far longer, so waits are generous (they end as soon as the condition holds).
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
_POLL_S = 0.1
CLUSTER_NAME = "cargotrace"


@dataclass(frozen=True, slots=True)
class Node:
    index: int
    client_port: int
    mqtt_port: int
    route_port: int
    http_port: int
    dir: Path

    @property
    def name(self) -> str:
        return f"n{self.index + 1}"

    @property
    def conf(self) -> Path:
        return self.dir / "nats.conf"

    @property
    def pid_file(self) -> Path:
        return self.dir / "nats.pid"

    @property
    def log(self) -> Path:
        return self.dir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"


def nodes(settings: Settings, size: int | None = None) -> list[Node]:
    base, root = settings.nats_port_base, settings.nats_dir.resolve()
    count = size if size is not None else settings.nats_cluster_size
    return [Node(i, base + i, base + 10 + i, base + 20 + i, base + 30 + i, root / f"n{i + 1}") for i in range(count)]


def accounts_file(settings: Settings) -> Path:
    return settings.nats_dir.resolve() / "accounts.conf"


def free_port_block(size: int = 40) -> int:
    """A base port with ``size`` free ports after it (node i uses base+i, +10, +20, +30), below the
    ephemeral range so that client connections never take one between the check and the start."""
    bases = list(range(20000, 32000, size))
    random.Random(os.getpid()).shuffle(bases)  # parallel runs (tests, benches) start elsewhere
    for base in bases:
        if all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports between 20000 and 32000")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nats-server binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- public API ----------------------------------------------------------------------------------


def start_local_cluster(settings: Settings, size: int | None = None) -> list[int]:
    """Start (or reuse) every node, then wait until each reports JetStream healthy; returns pids."""
    members = nodes(settings, size)
    if not accounts_file(settings).exists():
        raise BrokerError(f"{accounts_file(settings)} is missing: write the service account first "
                          "(devices.nats_accounts.NatsAccounts.ensure_service_accounts)")
    binary = _find_binary(settings.nats_bin)
    pids = []
    for node in members:
        pid = node_pid(node)
        if pid is None:
            if _port_answers("127.0.0.1", node.client_port):
                raise BrokerError(f"port {node.client_port} is taken by another process; choose another "
                                  "CARGOTRACE_NATS_PORT_BASE")
            pid = start_node(binary, node, members, accounts_file(settings))
        pids.append(pid)
    wait_healthy(members, START_TIMEOUT_S)
    return pids


def start_node(binary: str, node: Node, members: list[Node], accounts: Path) -> int:
    node.dir.mkdir(parents=True, exist_ok=True)
    node.dir.chmod(0o700)
    node.conf.write_text(render_config(node, members, accounts))
    try:
        with node.log.open("ab") as log:
            proc = subprocess.Popen([binary, "-c", str(node.conf)], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=node.dir, start_new_session=True)
    except OSError as exc:
        raise BrokerError(f"cannot run {binary}: {exc}") from exc
    _children[proc.pid] = proc
    tmp = node.pid_file.with_suffix(".tmp")  # atomic: a reader never sees a half-written pid file
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(node.pid_file)
    return proc.pid


def stop_local_cluster(settings: Settings, size: int | None = None) -> int:
    """SIGTERM every node we started and wait for it to exit; returns how many were stopped.

    Without ``size``, as many nodes as there are node directories (whatever `up --cluster N` used)."""
    if size is None:
        root = settings.nats_dir.resolve()
        size = len(list(root.glob("n[0-9]*"))) if root.is_dir() else 0
    stopped = 0
    for node in nodes(settings, size):
        if stop_node(node):
            stopped += 1
    return stopped


def stop_node(node: Node, sig: signal.Signals = signal.SIGTERM) -> bool:
    pid = node_pid(node)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            raise BrokerError(f"NATS node {node.name} (pid {pid}) did not exit within {STOP_TIMEOUT_S:g} s")
        time.sleep(_POLL_S)
    _children.pop(pid, None)
    node.pid_file.unlink(missing_ok=True)
    return True


def reload_nodes(settings: Settings) -> list[Node]:
    """SIGHUP every running node (re-reads accounts.conf) and wait until each has loaded it."""
    running = [(node, pid) for node in nodes(settings) if (pid := node_pid(node)) is not None]
    before = {node.name: _varz(node).get("config_load_time") for node, _ in running}
    for _, pid in running:
        os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + START_TIMEOUT_S
    for node, _ in running:
        while _varz(node).get("config_load_time") == before[node.name]:
            if time.monotonic() > deadline:
                raise BrokerError(f"NATS node {node.name} did not reload its configuration; see {node.log}")
            time.sleep(_POLL_S)
    return [node for node, _ in running]


def cluster_status(settings: Settings) -> list[dict[str, Any]]:
    """Per node: pid, whether it answers, JetStream health, cluster peers seen."""
    out = []
    for node in nodes(settings):
        pid = node_pid(node)
        varz = _varz(node) if pid is not None else {}
        out.append({"node": node.name, "pid": pid, "client_port": node.client_port, "mqtt_port": node.mqtt_port,
                    "up": bool(varz), "healthy": pid is not None and _healthy(node),
                    "routes": len(_json(node, "routez").get("routes", [])) if varz else 0})
    return out


# --- configuration -------------------------------------------------------------------------------


def render_config(node: Node, members: list[Node], accounts: Path) -> str:
    routes = ", ".join(f'"nats-route://127.0.0.1:{m.route_port}"' for m in members if m != node)
    return "\n".join([
        "# Generated by cargotrace (cli/local_nats.py); the accounts live in the included file.",
        f"server_name: {node.name}",
        f"listen: 127.0.0.1:{node.client_port}",
        f"http: 127.0.0.1:{node.http_port}",
        f'jetstream {{ store_dir: "{node.dir / "jetstream"}", max_memory_store: 64MB, max_file_store: 4GB }}',
        f"cluster {{ name: {CLUSTER_NAME}, listen: 127.0.0.1:{node.route_port}, routes: [{routes}] }}",
        # MQTT sessions and retained messages are JetStream streams; replicate them like the data.
        f"mqtt {{ listen: 127.0.0.1:{node.mqtt_port}, stream_replicas: {min(3, len(members))} }}",
        # nats-server resolves an include relative to the including file's directory.
        f'include "{os.path.relpath(accounts, node.dir)}"',
        "",
    ])


# --- process and monitoring ---------------------------------------------------------------------


def _exit_status(node: Node) -> str:
    conf = str(node.conf)
    codes = [f"pid {pid} exited {proc.returncode}" for pid, proc in _children.items()
             if proc.returncode is not None and isinstance(proc.args, list) and conf in map(str, proc.args)]
    return ", ".join(codes) or "not a child of this process"


def node_pid(node: Node) -> int | None:
    try:
        pid = int(node.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    child = _children.get(pid)
    if child is not None:
        return pid if child.poll() is None else None  # our own child: no need to trust /proc
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        argv = []
    if _alive(pid) and os.fsencode(node.conf) in argv:
        return pid
    node.pid_file.unlink(missing_ok=True)
    return None


def _json(node: Node, path: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/{path}", timeout=2) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _varz(node: Node) -> dict[str, Any]:
    return _json(node, "varz")


def _healthy(node: Node) -> bool:
    """JetStream on this node runs and is current with the cluster's meta leader.

    Not the full /healthz: after a restart, a consumer replica that sees no traffic stays "not
    current" until the consumer is used, which would keep a healthy node "down" indefinitely.
    Stream replicas' currency is reported separately (`cargotrace status`)."""
    url = f"http://127.0.0.1:{node.http_port}/healthz?js-server-only=true"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def wait_healthy(members: list[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for node in members:
        while not _healthy(node):
            pid = node_pid(node)
            if pid is None:
                raise BrokerError(f"NATS node {node.name} exited while starting ({_exit_status(node)}); "
                                  f"last lines of {node.log}:\n"
                                  f"{_tail(node.log)}")
            if time.monotonic() > deadline:
                raise BrokerError(f"NATS node {node.name} not healthy after {timeout:g} s; last lines of "
                                  f"{node.log}:\n{_tail(node.log)}")
            time.sleep(_POLL_S)
