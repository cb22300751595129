"""Broker accounts: the Mosquitto dynamic-security plugin driven over MQTT.

Only MQTT is spoken (commands to ``$CONTROL/dynamic-security/v1`` as the admin account, answers
on ``.../response``), so this works against a remote broker as well as the local one.
Each device is a dynsec client (username = device_id) with its own role holding its ACLs, bound
to the client id equal to its device id: a device cannot take over another client's session (the
ingest workers' persistent sessions above all), whose ids all start with ``cargotrace-``, a prefix
no device id may use.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from runtime.mqtt_tls import apply_tls
from runtime.settings import Settings

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
SERVICE_ROLE = "cargotrace-service"
DEVICE_ROLE_PREFIX = "cargotrace-device:"
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Client ids of the platform's own clients (ingest workers, admin sessions, probes) start with it;
# no device id may, so no device account can be bound to (or take over) such a session.
RESERVED_CLIENT_ID_PREFIX = "cargotrace-"
# The only subtopics a device may publish to (CONTRACT s.1); everything else is refused.
DEVICE_DATA_KINDS = ("scan", "rfid", "position", "env", "status")
# Topics under a device's prefix that only the server publishes (downlink, CONTRACT 1 and 3.1).
SERVER_ONLY_KINDS = ("config", "tasks", "feedback")

T = TypeVar("T")

_NOT_FOUND = ("Client not found", "Role not found")

# Anything not granted by a role is denied, receiving included: a session obtained by any means
# (a misconfigured role, a future bug) still gets only the topics its role explicitly grants.
_DEFAULT_ACL_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}


class BrokerError(Exception):
    """A broker operation failed; the message says what to do about it."""


def validate_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise BrokerError(
            f"invalid device id {device_id!r}: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit (no '/', '+', '#')"
        )
    if device_id.lower().startswith(RESERVED_CLIENT_ID_PREFIX):
        raise BrokerError(
            f"invalid device id {device_id!r}: ids starting with {RESERVED_CLIENT_ID_PREFIX!r} are reserved for "
            "the platform's own broker clients"
        )
    return device_id


def _acl(acltype: str, topic: str, allow: bool = True, priority: int = 0) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": allow, "priority": priority}


def _acl_key(acl: dict[str, Any]) -> tuple[str, str, bool, int]:
    return (acl["acltype"], acl["topic"], bool(acl["allow"]), int(acl.get("priority", 0)))


class BrokerAccounts:
    """Admin session on the broker; use as a context manager (connects on enter)."""

    def __init__(self, settings: Settings, *, timeout: float = 5.0) -> None:
        self._settings = settings
        self._timeout = timeout
        self._prefix = settings.topic_prefix
        self._client = _mqtt_client("cargotrace-admin", settings.mqtt_admin_user, settings.mqtt_admin_password,
                                    settings)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._cond = threading.Condition()
        self._connack: ReasonCode | None = None
        self._suback: list[ReasonCode] | None = None
        self._responses: dict[str, dict[str, Any]] = {}

    # --- session -----------------------------------------------------------------------------------

    def __enter__(self) -> BrokerAccounts:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        where = f"{self._settings.mqtt_host}:{self._settings.mqtt_client_port}"
        try:
            self._client.connect(self._settings.mqtt_host, self._settings.mqtt_client_port, keepalive=30)
        except OSError as exc:
            raise BrokerError(
                f"cannot reach the MQTT broker at {where} ({exc}); start it (`cargotrace up`) or set "
                "CARGOTRACE_MQTT_HOST / CARGOTRACE_MQTT_PORT"
            ) from exc
        self._client.loop_start()
        connack = self._wait(lambda: self._connack, f"no CONNACK from {where}")
        if connack.is_failure:
            self.close()
            raise BrokerError(
                f"broker at {where} refused the admin account {self._settings.mqtt_admin_user!r} "
                f"({connack}); check CARGOTRACE_MQTT_ADMIN_PASSWORD (or <state_dir>/secrets.json) "
                "matches the broker's dynamic-security file"
            )
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        granted = self._wait(lambda: self._suback, f"no SUBACK for {RESPONSE_TOPIC}")
        if granted[0].is_failure:
            self.close()
            raise BrokerError(
                f"the admin account may not read {RESPONSE_TOPIC} ({granted[0]}); it needs the dynsec admin role"
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        with self._cond:
            self._connack = rc
            self._cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        with self._cond:
            self._suback = rcs
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return  # not a dynsec answer; nothing waits for it
        with self._cond:
            for response in responses:
                if isinstance(response, dict) and "correlationData" in response:
                    self._responses[str(response["correlationData"])] = response
            self._cond.notify_all()

    def _wait(self, ready: Callable[[], T | None], what: str) -> T:
        """Block until ``ready()`` gives a value (set by a paho callback) or the timeout passes."""
        with self._cond:
            value = self._cond.wait_for(ready, timeout=self._timeout)
        if value is None:
            raise BrokerError(f"{what} within {self._timeout:g} s; is the broker overloaded or down?")
        return value

    # --- dynsec commands ---------------------------------------------------------------------------

    def _command(self, command: str, ok_errors: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
        """Run one dynsec command and return its ``data``; an error in ``ok_errors`` gives {}."""
        correlation = uuid.uuid4().hex
        payload = json.dumps({"commands": [{"command": command, "correlationData": correlation, **fields}]})
        info = self._client.publish(CONTROL_TOPIC, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerError(f"dynsec {command}: publish failed ({mqtt.error_string(info.rc)}); reconnect")
        response = self._wait(lambda: self._responses.pop(correlation, None), f"no answer to dynsec {command}")
        error = response.get("error")
        if error in ok_errors:
            return {}
        if error:
            raise BrokerError(f"dynsec {command} failed: {error}")
        data = response.get("data", {})
        return data if isinstance(data, dict) else {}

    def _get_client(self, username: str) -> dict[str, Any] | None:
        client = self._command("getClient", ok_errors=("Client not found",), username=username).get("client")
        return client if isinstance(client, dict) else None

    def _ensure_role(self, rolename: str, acls: list[dict[str, Any]]) -> None:
        """Create the role or bring its ACLs to exactly ``acls``; unchanged ACLs are not touched
        (a role change kicks its clients), so a second call is a no-op."""
        role = self._command("getRole", ok_errors=("Role not found",), rolename=rolename).get("role")
        if role is None:
            self._command("createRole", rolename=rolename, acls=acls)
            return
        present = {_acl_key(acl) for acl in role.get("acls", [])}
        wanted = {_acl_key(acl) for acl in acls}
        for acltype, topic, _allow, _priority in present - wanted:
            self._command("removeRoleACL", rolename=rolename, acltype=acltype, topic=topic)
        for acl in acls:
            if _acl_key(acl) not in present:
                self._command("addRoleACL", rolename=rolename, **acl)

    def _ensure_default_acl_access(self) -> None:
        current = self._command("getDefaultACLAccess").get("acls", [])
        if {a["acltype"]: a["allow"] for a in current} != _DEFAULT_ACL_ACCESS:
            acls = [{"acltype": name, "allow": allow} for name, allow in _DEFAULT_ACL_ACCESS.items()]
            self._command("setDefaultACLAccess", acls=acls)

    # --- service accounts --------------------------------------------------------------------------

    def _service_acls(self) -> list[dict[str, Any]]:
        uplink = f"{self._prefix}/dev/+/+"
        return [
            _acl("subscribePattern", uplink),
            # Mosquitto 2.0.11 checks a shared subscription against its full `$share/<group>/...`
            # filter, so the plain grant above does not cover it (verified).
            _acl("subscribePattern", f"$share/+/{uplink}"),
            _acl("publishClientReceive", uplink),
            _acl("publishClientSend", f"{self._prefix}/dev/+/config"),
            # Clearing a retained copy a device left on a data topic (an empty retained publish);
            # the ingest worker does it after dead-lettering the retained message.
            *(_acl("publishClientSend", f"{self._prefix}/dev/+/{kind}") for kind in DEVICE_DATA_KINDS),
            # CONTRACT 3.1: retained task lists and scan feedback to scanners.
            *(_acl("publishClientSend", f"{self._prefix}/dev/+/{kind}") for kind in SERVER_ONLY_KINDS[1:]),
        ]

    def ensure_service_accounts(self) -> None:
        """Idempotent: default-deny ACLs, the service role and the service client with its password."""
        user, password = self._settings.mqtt_service_user, self._settings.mqtt_service_password
        if not password:
            raise BrokerError(
                "no service password: set CARGOTRACE_MQTT_SERVICE_PASSWORD or load the settings with "
                "create_secrets=True"
            )
        self._ensure_default_acl_access()
        self._ensure_role(SERVICE_ROLE, self._service_acls())
        client = self._get_client(user)
        if client is None:
            self._command("createClient", username=user, password=password, roles=[{"rolename": SERVICE_ROLE}])
            return
        if SERVICE_ROLE not in _role_names(client):
            self._command("addClientRole", username=user, rolename=SERVICE_ROLE)
        self._upgrade_devices()
        # Setting the password disconnects the running services, so only do it when it changed.
        if not self._credentials_work(user, password):
            self._command("setClientPassword", username=user, password=password)

    def _upgrade_devices(self) -> None:
        """Devices provisioned before client-id binding and receive grants: bring them up to date."""
        clients = self._command("listClients", verbose=True, count=-1).get("clients", [])
        # Two commands for the whole fleet; one more per device only where something is out of date.
        roles = {r["rolename"]: {_acl_key(a) for a in r.get("acls", [])}
                 for r in self._command("listRoles", verbose=True, count=-1).get("roles", [])}
        for client in clients:
            device_id = client.get("username", "")
            role = self._device_role(device_id)
            if role not in _role_names(client):
                continue
            if client.get("clientid") != device_id:
                self._command("setClientId", username=device_id, clientid=device_id)
            acls = self._device_acls(device_id)
            if roles.get(role) != {_acl_key(a) for a in acls}:
                self._ensure_role(role, acls)

    def _credentials_work(self, username: str, password: str) -> bool:
        probe = _mqtt_client("cargotrace-probe", username, password, self._settings)
        try:
            probe.connect(self._settings.mqtt_host, self._settings.mqtt_client_port, keepalive=10)
        except OSError as exc:
            raise BrokerError(f"cannot reach the MQTT broker to check {username!r}: {exc}") from exc
        done = threading.Event()
        result: list[bool] = []

        def on_connect(c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
            result.append(not rc.is_failure)
            done.set()

        probe.on_connect = on_connect
        probe.loop_start()
        try:
            done.wait(self._timeout)
        finally:
            probe.disconnect()
            probe.loop_stop()
        return bool(result and result[0])

    # --- devices -----------------------------------------------------------------------------------

    def _device_role(self, device_id: str) -> str:
        return DEVICE_ROLE_PREFIX + device_id

    def _device_acls(self, device_id: str) -> list[dict[str, Any]]:
        own = f"{self._prefix}/dev/{device_id}"
        # Exactly the five data kinds: no config (the server's downlink), no other subtopic.
        return [
            *(_acl("publishClientSend", f"{own}/{kind}") for kind in DEVICE_DATA_KINDS),
            _acl("subscribeLiteral", f"{own}/config"),
            _acl("publishClientReceive", f"{own}/config"),
            # Tasks and feedback (CONTRACT 3.1) are downlink too: a device reads its own, and cannot
            # publish there (it may publish only the data kinds above).
            *(_acl("subscribeLiteral", f"{own}/{kind}") for kind in SERVER_ONLY_KINDS[1:]),
            *(_acl("publishClientReceive", f"{own}/{kind}") for kind in SERVER_ONLY_KINDS[1:]),
        ]

    def _require_device(self, device_id: str) -> dict[str, Any] | None:
        """The device's dynsec client, None if absent; refuses a non-device account of that name."""
        client = self._get_client(validate_device_id(device_id))
        if client is not None and self._device_role(device_id) not in _role_names(client):
            raise BrokerError(f"{device_id!r} is a broker account that is not a device; choose another id")
        return client

    def add_device(self, device_id: str) -> str:
        """Create the device's account and role; returns its new password."""
        if self._require_device(device_id) is not None:
            raise BrokerError(f"device {device_id!r} already has broker credentials; rotate them instead")
        role = self._device_role(device_id)
        # A role left over by an interrupted add has no client attached; recreate it from scratch.
        self._command("deleteRole", ok_errors=_NOT_FOUND, rolename=role)
        self._command("createRole", rolename=role, acls=self._device_acls(device_id))
        password = _new_password()
        try:
            self._command("createClient", username=device_id, password=password, clientid=device_id,
                          roles=[{"rolename": role}])
        except BrokerError as exc:
            if "already exists" in str(exc):
                raise BrokerError(
                    f"device {device_id!r} was just created by someone else; rotate its credentials instead"
                ) from exc
            raise
        return password

    def rotate_device(self, device_id: str) -> str:
        """Issue a new password; the old one is refused from now on.

        Mosquitto 2.0.11 also disconnects a device connected with the old password (verified).
        """
        if self._require_device(device_id) is None:
            raise BrokerError(f"device {device_id!r} has no broker credentials; add it first")
        password = _new_password()
        self._command("setClientPassword", username=device_id, password=password)
        return password

    def remove_device(self, device_id: str) -> None:
        """Delete the device's account (dynsec disconnects it) and role; idempotent."""
        self._require_device(device_id)
        self._command("deleteClient", ok_errors=_NOT_FOUND, username=device_id)
        self._command("deleteRole", ok_errors=_NOT_FOUND, rolename=self._device_role(device_id))

    def device_exists(self, device_id: str) -> bool:
        client = self._get_client(validate_device_id(device_id))
        return client is not None and self._device_role(device_id) in _role_names(client)

    def list_devices(self) -> list[str]:
        clients = self._command("listClients", verbose=True, count=-1).get("clients", [])
        return sorted(c["username"] for c in clients if self._device_role(c["username"]) in _role_names(c))


def _mqtt_client(id_prefix: str, username: str, password: str, settings: Settings) -> mqtt.Client:
    # A unique client id: several admin sessions (CLI, API) may be connected at once.
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{id_prefix}-{uuid.uuid4().hex[:12]}", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(username, password)
    apply_tls(client, settings)
    return client


def _role_names(client: dict[str, Any]) -> set[str]:
    return {role["rolename"] for role in client.get("roles", [])}


def _new_password() -> str:
    return secrets.token_urlsafe(24)  # 32 characters, 192 bits
