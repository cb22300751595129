"""The local Mosquitto of `cargotrace up`: rendered from the project's mosquitto.conf, run as a child.

Everything lives in ``settings.broker_dir``: the runtime config, the dynamic-security file, the
persistence database, the pid file and the log. The broker runs in the foreground as a child
process in its own session (not ``mosquitto -d``), so its pid is known and paths stay absolute.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from cli.broker_tls import broker_tls
from devices.broker_accounts import BrokerError
from runtime.settings import Settings, write_private

START_TIMEOUT_S = 10.0
# Mosquitto writes its whole database on SIGTERM; with a large backlog that takes a while.
STOP_TIMEOUT_S = 60.0
_POLL_S = 0.05
_SBIN_PATH = "/usr/sbin:/usr/local/sbin:/sbin"

# Our children, kept so that they are reaped (a zombie still looks alive to kill(pid, 0)).
_children: dict[int, subprocess.Popen[bytes]] = {}


class _Paths:
    def __init__(self, settings: Settings) -> None:
        self.dir = settings.broker_dir.resolve()
        self.conf = self.dir / "mosquitto.conf"
        self.dynsec = self.dir / "dynamic-security.json"
        self.pid = self.dir / "mosquitto.pid"
        self.log = self.dir / "mosquitto.log"


# --- public API ----------------------------------------------------------------------------------


def start_local_broker(settings: Settings) -> int:
    """Start the project broker, or reuse ours if it already runs; returns its pid."""
    paths = _Paths(settings)
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.dir.chmod(0o700)  # password hashes and queued messages live here
    pid = _our_pid(paths)
    if pid is not None:
        _wait_for_port(settings, paths, pid, START_TIMEOUT_S)
        return pid
    if _port_answers(settings.mqtt_host, settings.mqtt_port):
        raise BrokerError(
            f"port {settings.mqtt_port} on {settings.mqtt_host} is already taken by another process; "
            "stop it or choose another port with CARGOTRACE_MQTT_PORT"
        )
    if settings.mqtt_tls_port and _port_answers(settings.mqtt_host, settings.mqtt_tls_port):
        raise BrokerError(
            f"the TLS port {settings.mqtt_tls_port} on {settings.mqtt_host} is already taken by another process; "
            "choose another with CARGOTRACE_MQTT_TLS_PORT (0: no TLS listener)"
        )
    mosquitto = _find_binary(settings.mosquitto_bin)
    template = _read_project_config(settings)
    _check_plugins_installed(settings, template)
    _ensure_dynsec_file(settings, paths)
    paths.conf.write_text(_render_config(settings, paths, template))
    pid = _spawn(mosquitto, paths)
    _wait_for_port(settings, paths, pid, START_TIMEOUT_S)
    return pid


def stop_local_broker(settings: Settings) -> bool:
    """SIGTERM our broker and wait for it to exit (it saves its database); False if none ran."""
    paths = _Paths(settings)
    pid = _our_pid(paths)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):  # it may have exited since the check
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the local broker (pid {pid}) did not exit within {STOP_TIMEOUT_S:g} s of SIGTERM; it may "
                f"still be saving its database, see {paths.log}; `kill -9 {pid}` loses unsaved messages"
            )
        time.sleep(_POLL_S)
    _children.pop(pid, None)
    paths.pid.unlink(missing_ok=True)
    return True


def local_broker_status(settings: Settings) -> dict[str, Any]:
    paths = _Paths(settings)
    pid = _our_pid(paths)
    running = pid is not None and _port_answers(settings.mqtt_host, settings.mqtt_port)
    return {"running": running, "pid": pid, "port": settings.mqtt_port, "tls_port": settings.mqtt_tls_port or None}


# --- runtime configuration -------------------------------------------------------------------------


def _render_config(settings: Settings, paths: _Paths, template: str) -> str:
    """The project's mosquitto.conf with the site-specific directives pointed at ``broker_dir``.

    The first occurrence of each such directive is replaced in place (order matters: the plugin
    options must follow ``plugin``), later duplicates are dropped except further listeners, and a
    directive the file lacks is appended. Every other line is kept as is.
    """
    overrides = {
        "listener": _listener_line(template, settings.mqtt_port),
        "persistence_location": f"persistence_location {paths.dir}/",
        "plugin_opt_config_file": f"plugin_opt_config_file {paths.dynsec}",
        "pid_file": f"pid_file {paths.pid}",
        # The child's stderr is the log file; a site log file may not be writable for us.
        "log_dest": "log_dest stderr",
        # Run as whoever starts it: as root, Mosquitto would otherwise drop to the `mosquitto`
        # user, which cannot write a state directory owned by someone else (dynsec changes and
        # the persistence database would then be lost).
        "user": f"user {pwd.getpwuid(os.geteuid()).pw_name}",
    }
    lines = [f"# Generated from {settings.mosquitto_conf} by cargotrace; edit that file, not this one."]
    seen: set[str] = set()
    for line in template.splitlines():
        name = _directive(line)
        if name not in overrides:
            lines.append(line)
        elif name not in seen:
            lines.append(overrides[name])
            seen.add(name)
        elif name == "listener":
            lines.append(line)
    lines += [line for name, line in overrides.items() if name not in seen]
    if settings.mqtt_tls_port:
        lines += _tls_listener(settings, template)
    return "\n".join(lines) + "\n"


def _tls_listener(settings: Settings, template: str) -> list[str]:
    """The second listener: same bind address, TLS 1.2+ with the broker's certificate."""
    tls = broker_tls(settings)
    bind = _listener_line(template, settings.mqtt_tls_port)
    return ["", "# TLS listener (CARGOTRACE_MQTT_TLS_PORT), certificate from cli/broker_tls.py or the configured files",
            bind, "protocol mqtt", f"cafile {tls.cafile}", f"certfile {tls.certfile}", f"keyfile {tls.keyfile}",
            "tls_version tlsv1.2"]


def _read_project_config(settings: Settings) -> str:
    try:
        return settings.mosquitto_conf.read_text()
    except OSError as exc:
        raise BrokerError(
            f"cannot read the broker config {settings.mosquitto_conf} ({exc}); set CARGOTRACE_MOSQUITTO_CONF"
        ) from exc


def _directive(line: str) -> str | None:
    words = line.split(maxsplit=1)
    return words[0] if words and not words[0].startswith("#") else None


def _listener_line(template: str, port: int) -> str:
    """``listener <port> <bind address of the file's first listener>``; 127.0.0.1 if none."""
    for line in template.splitlines():
        words = line.split()
        if words and words[0] == "listener":
            return " ".join(["listener", str(port), *words[2:]])
    return f"listener {port} 127.0.0.1"


def _ensure_dynsec_file(settings: Settings, paths: _Paths) -> None:
    """The initial dynamic-security file: the admin client and role, receive denied by default.

    Written here rather than by ``mosquitto_ctrl dynsec init FILE USER PASSWORD``, which takes the
    password on its command line, readable by every local user in /proc/<pid>/cmdline while it
    runs. Same format as that command writes (PBKDF2-SHA512, base64 salt and hash, verified against
    Mosquitto 2.0.11), created 0600 in one step.
    """
    if paths.dynsec.exists():
        return
    if not settings.mqtt_admin_password:
        raise BrokerError(
            "no broker admin password: set CARGOTRACE_MQTT_ADMIN_PASSWORD or load the settings with create_secrets=True"
        )
    write_private(paths.dynsec, json.dumps(dynsec_initial_config(settings.mqtt_admin_user,
                                                                 settings.mqtt_admin_password), indent=2))


_ADMIN_ROLE = "admin"
# Dynsec's own default is 101; a higher count costs only the admin's rare logins.
_ADMIN_HASH_ITERATIONS = 10_000


def dynsec_initial_config(user: str, password: str) -> dict[str, Any]:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ADMIN_HASH_ITERATIONS, 64)
    admin_acls = [
        {"acltype": acltype, "topic": topic, "allow": True}
        for acltype, topic in (
            ("publishClientSend", "$CONTROL/dynamic-security/#"),
            ("publishClientReceive", "$CONTROL/dynamic-security/#"),
            ("subscribePattern", "$CONTROL/dynamic-security/#"),
            ("publishClientReceive", "$SYS/#"),
            ("subscribePattern", "$SYS/#"),
            ("publishClientReceive", "#"),
            ("subscribePattern", "#"),
            ("unsubscribePattern", "#"),
        )
    ]
    return {
        "clients": [{
            "username": user,
            "textName": "cargotrace broker admin",
            "password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(),
            "iterations": _ADMIN_HASH_ITERATIONS,
            "roles": [{"rolename": _ADMIN_ROLE}],
        }],
        "roles": [{"rolename": _ADMIN_ROLE, "acls": admin_acls}],
        # Deny by default from the first start (devices/broker_accounts.py keeps it so).
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                             "unsubscribe": True},
    }


def _check_plugins_installed(settings: Settings, template: str) -> None:
    for line in template.splitlines():
        words = line.split()
        if words[:1] == ["plugin"] and len(words) > 1 and not Path(words[1]).exists():
            raise BrokerError(
                f"the broker plugin {words[1]} named in {settings.mosquitto_conf} is not installed; "
                "install Debian's `mosquitto` package (it ships the dynamic-security plugin)"
            )


def _find_binary(name: str) -> str:
    """Resolve a program on PATH, then in the sbin directories (often not on a user's PATH)."""
    found = shutil.which(name) or shutil.which(name, path=_SBIN_PATH)
    if found is None:
        raise BrokerError(
            f"{name} not found: install Mosquitto (`apt-get install mosquitto`) or set "
            "CARGOTRACE_MOSQUITTO_BIN to the broker's path"
        )
    return found


# --- process ---------------------------------------------------------------------------------------


def _spawn(mosquitto: str, paths: _Paths) -> int:
    try:
        with paths.log.open("ab") as log:
            proc = subprocess.Popen(
                [mosquitto, "-c", str(paths.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=paths.dir,
                start_new_session=True,  # survives the CLI and its terminal's signals
            )
    except OSError as exc:
        raise BrokerError(f"cannot run {mosquitto}: {exc}") from exc
    _children[proc.pid] = proc
    paths.pid.write_text(f"{proc.pid}\n")
    return proc.pid


def _our_pid(paths: _Paths) -> int | None:
    """The pid of the broker started for this broker_dir if it still runs; clears a stale pid file."""
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    if _alive(pid) and _runs_config(pid, paths.conf):
        return pid
    paths.pid.unlink(missing_ok=True)
    return None


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs_config(pid: int, conf: Path) -> bool:
    """Whether ``pid`` is a Mosquitto started with this config (guards against a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(conf) in argv


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_for_port(settings: Settings, paths: _Paths, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _port_answers(settings.mqtt_host, settings.mqtt_port):
        if not _alive(pid):
            _children.pop(pid, None)
            paths.pid.unlink(missing_ok=True)
            raise BrokerError(f"mosquitto exited while starting; last lines of {paths.log}:\n{_tail(paths.log)}")
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the local broker (pid {pid}) does not answer on {settings.mqtt_host}:{settings.mqtt_port} "
                f"after {timeout:g} s (if CARGOTRACE_MQTT_PORT changed since it started, run "
                f"`cargotrace down` first); last lines of {paths.log}:\n{_tail(paths.log)}"
            )
        time.sleep(_POLL_S)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_bytes()[-4096:].decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
