"""The broker's security and durability, checked against the real project broker (no mocks).

Run with ``-p tests.integration.broker_fixtures`` (or with the fixtures in ``pytest_plugins``).
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cli.local_broker import local_broker_status, start_local_broker, stop_local_broker
from devices.broker_accounts import BrokerAccounts, BrokerError
from runtime.settings import Settings
from tests.integration.broker_fixtures import broker_test_settings, start_test_broker

pytestmark = pytest.mark.integration

TIMEOUT = 3.0
NOT_AUTHORIZED = 135
BAD_CREDENTIALS = (134, 135)  # "Bad user name or password" or "Not authorized"


def _default_client_id(username: str | None) -> str:
    """A device connects with its own id (the broker binds it); others with a unique one."""
    if username is None or username.startswith("cargotrace-"):
        return f"t-{uuid.uuid4().hex[:10]}"
    return username


class Peer:
    """A real MQTT client that records what the broker answers."""

    def __init__(
        self,
        settings: Settings,
        username: str | None,
        password: str | None = None,
        *,
        client_id: str | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    ) -> None:
        self.settings = settings
        self.protocol = protocol
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or _default_client_id(username), protocol=protocol
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.subacks: dict[int, ReasonCode] = {}
        self.pubacks: dict[int, ReasonCode] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        with self.cond:
            if self.connack is None:
                self.connack, self.session_present = rc, flags.session_present
            self.cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        with self.cond:
            self.subacks[mid] = rcs[0]
            self.cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        with self.cond:
            self.pubacks[mid] = rc
            self.cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self.disconnected.set()

    def _wait(self, ready: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        with self.cond:
            value = self.cond.wait_for(ready, timeout=timeout)
        assert value is not None, f"timed out waiting for {what}"
        return value

    def connect(self, *, clean_start: bool = True, session_expiry_s: int | None = None) -> ReasonCode:
        kwargs: dict[str, Any] = {}
        if self.protocol == MQTTProtocolVersion.MQTTv5:
            kwargs["clean_start"] = clean_start
            if session_expiry_s is not None:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = session_expiry_s
                kwargs["properties"] = props
        self.client.connect(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=10, **kwargs)
        self.client.loop_start()
        connack: ReasonCode = self._wait(lambda: self.connack, "CONNACK")
        return connack

    def subscribe(self, topic: str, qos: int = 1) -> ReasonCode:
        _, mid = self.client.subscribe(topic, qos=qos)
        assert mid is not None, f"subscribe to {topic} was not sent"
        suback: ReasonCode = self._wait(lambda: self.subacks.get(mid), f"SUBACK for {topic}")
        return suback

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        puback: ReasonCode = self._wait(lambda: self.pubacks.get(info.mid), f"PUBACK for {topic}")
        return puback

    def wait_messages(self, count: int, timeout: float = TIMEOUT) -> list[mqtt.MQTTMessage]:
        self._wait(lambda: len(self.messages) >= count or None, f"{count} message(s)", timeout)
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    """Make Peers that are closed after the test, whatever happens."""
    made: list[Peer] = []

    def make(*args: Any, **kwargs: Any) -> Peer:
        made.append(Peer(*args, **kwargs))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


@pytest.fixture
def accounts(broker_settings: Settings) -> Iterator[BrokerAccounts]:
    with BrokerAccounts(broker_settings) as admin:
        yield admin


def new_device_id() -> str:
    return f"dev-{uuid.uuid4().hex[:8]}"


def device_topic(settings: Settings, device_id: str, kind: str) -> str:
    return f"{settings.topic_prefix}/dev/{device_id}/{kind}"


def connected_device(
    peers: Callable[..., Peer], settings: Settings, accounts: BrokerAccounts, **kwargs: Any
) -> tuple[str, Peer]:
    device_id = new_device_id()
    device = peers(settings, device_id, accounts.add_device(device_id), **kwargs)
    assert not device.connect().is_failure
    return device_id, device


def ingest_subscriber(peers: Callable[..., Peer], settings: Settings) -> Peer:
    """The service account on a shared subscription of its own group (tests do not share messages)."""
    service = peers(settings, settings.mqtt_service_user, settings.mqtt_service_password)
    assert not service.connect().is_failure
    group = uuid.uuid4().hex[:8]
    assert not service.subscribe(f"$share/{group}/{settings.topic_prefix}/dev/+/+").is_failure
    return service


# --- authentication ----------------------------------------------------------------------------------


def test_anonymous_connect_is_refused(broker_settings: Settings, peers: Callable[..., Peer]) -> None:
    assert peers(broker_settings, None).connect().value == NOT_AUTHORIZED


def test_wrong_password_is_refused(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    device_id = new_device_id()
    accounts.add_device(device_id)
    assert peers(broker_settings, device_id, "not-the-password").connect().value in BAD_CREDENTIALS


def test_device_added_while_running_connects_at_once(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    device_id = new_device_id()
    password = accounts.add_device(device_id)
    assert len(password) >= 24
    assert not peers(broker_settings, device_id, password).connect().is_failure
    assert accounts.device_exists(device_id)
    assert device_id in accounts.list_devices()


def test_rotation_refuses_the_old_password(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    device_id = new_device_id()
    old = accounts.add_device(device_id)
    connected = peers(broker_settings, device_id, old)
    assert not connected.connect().is_failure
    new = accounts.rotate_device(device_id)
    assert new != old
    assert connected.disconnected.wait(TIMEOUT), "a session with the old password survived rotation"
    assert peers(broker_settings, device_id, old).connect().value in BAD_CREDENTIALS
    assert not peers(broker_settings, device_id, new).connect().is_failure


def test_removed_device_is_disconnected_and_cannot_reconnect(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    device_id = new_device_id()
    password = accounts.add_device(device_id)
    device = peers(broker_settings, device_id, password)
    assert not device.connect().is_failure
    accounts.remove_device(device_id)
    assert device.disconnected.wait(TIMEOUT), "the broker kept the removed device connected"
    assert peers(broker_settings, device_id, password).connect().value in BAD_CREDENTIALS
    assert not accounts.device_exists(device_id)
    accounts.remove_device(device_id)  # idempotent


def test_account_management_refuses_misuse(broker_settings: Settings, accounts: BrokerAccounts) -> None:
    device_id = new_device_id()
    accounts.add_device(device_id)
    with pytest.raises(BrokerError, match="rotate"):
        accounts.add_device(device_id)
    with pytest.raises(BrokerError, match="add it first"):
        accounts.rotate_device(new_device_id())
    for bad in ("a/b", "dev+", "#", "", "-lead", "x" * 65):
        with pytest.raises(BrokerError, match="invalid device id"):
            accounts.add_device(bad)
    # Service and admin accounts are not devices: never listed, rotated or removed as such.
    # (their names start with the reserved `cargotrace-` prefix, which no device id may use)
    with pytest.raises(BrokerError, match="reserved"):
        accounts.remove_device(broker_settings.mqtt_service_user)
    assert broker_settings.mqtt_admin_user not in accounts.list_devices()


def test_ensure_service_accounts_again_keeps_services_connected(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    service = ingest_subscriber(peers, broker_settings)
    accounts.ensure_service_accounts()  # what every `cargotrace up` does while workers run
    device_id, device = connected_device(peers, broker_settings, accounts)
    assert not device.publish(device_topic(broker_settings, device_id, "env"), b"{}").is_failure
    assert len(service.wait_messages(1)) == 1
    assert not service.disconnected.is_set()


# --- authorisation -----------------------------------------------------------------------------------


def test_device_publish_reaches_shared_service_subscription(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    service = ingest_subscriber(peers, broker_settings)
    device_id, device = connected_device(peers, broker_settings, accounts)
    topic = device_topic(broker_settings, device_id, "scan")
    assert not device.publish(topic, b'{"msg_id":"1","code":"x"}').is_failure
    [message] = service.wait_messages(1)
    assert (message.topic, message.qos) == (topic, 1)


def test_mqtt311_device_publishes(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    service = ingest_subscriber(peers, broker_settings)
    device_id, device = connected_device(peers, broker_settings, accounts, protocol=MQTTProtocolVersion.MQTTv311)
    topic = device_topic(broker_settings, device_id, "status")
    device.publish(topic, b'{"msg_id":"1"}')
    assert service.wait_messages(1)[0].topic == topic


def test_publish_to_another_devices_topic_is_refused(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    service = ingest_subscriber(peers, broker_settings)
    device_id, device = connected_device(peers, broker_settings, accounts)
    other_id, _ = connected_device(peers, broker_settings, accounts)
    forged = device_topic(broker_settings, other_id, "scan")
    assert device.publish(forged, b'{"msg_id":"f"}').value == NOT_AUTHORIZED
    # A later allowed message from the same device marks that the refused one had its chance.
    marker = device_topic(broker_settings, device_id, "status")
    assert not device.publish(marker, b'{"msg_id":"m"}').is_failure
    assert [m.topic for m in service.wait_messages(1)] == [marker]


def test_device_cannot_publish_its_own_config(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    device_id, device = connected_device(peers, broker_settings, accounts)
    own_config = device_topic(broker_settings, device_id, "config")
    assert device.publish(own_config, b"{}", retain=True).value == NOT_AUTHORIZED


def test_device_reads_only_its_own_config(
    broker_settings: Settings, accounts: BrokerAccounts, peers: Callable[..., Peer]
) -> None:
    device_id, device = connected_device(peers, broker_settings, accounts)
    other_id = new_device_id()
    accounts.add_device(other_id)
    own_config = device_topic(broker_settings, device_id, "config")
    service = peers(broker_settings, broker_settings.mqtt_service_user, broker_settings.mqtt_service_password)
    assert not service.connect().is_failure
    assert not service.publish(own_config, b'{"mode":"pick"}', retain=True).is_failure

    assert device.subscribe(device_topic(broker_settings, other_id, "config")).value == NOT_AUTHORIZED
    assert device.subscribe(device_topic(broker_settings, device_id, "+")).is_failure
    assert not device.subscribe(own_config).is_failure
    [message] = device.wait_messages(1)
    assert (message.topic, message.payload, message.retain) == (own_config, b'{"mode":"pick"}', True)


# --- the local broker ----------------------------------------------------------------------------------


def test_start_is_idempotent(broker_settings: Settings) -> None:
    first = start_local_broker(broker_settings)
    assert start_local_broker(broker_settings) == first
    assert local_broker_status(broker_settings) == {
        "running": True,
        "pid": first,
        "port": broker_settings.mqtt_port,
        "tls_port": broker_settings.mqtt_tls_port,
    }


def test_start_refuses_a_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = broker_test_settings(tmp_path).model_copy(update={"mqtt_port": port})
        with pytest.raises(BrokerError, match=rf"port {port}.*CARGOTRACE_MQTT_PORT"):
            start_local_broker(settings)
    assert local_broker_status(settings)["running"] is False


def test_queued_messages_survive_a_restart(tmp_path: Path, peers: Callable[..., Peer]) -> None:
    settings = broker_test_settings(tmp_path)
    start_test_broker(settings)
    try:
        with BrokerAccounts(settings) as admin:
            device_id = new_device_id()
            password = admin.add_device(device_id)
        worker_id = f"ingest-{uuid.uuid4().hex[:8]}"
        worker = peers(settings, settings.mqtt_service_user, settings.mqtt_service_password, client_id=worker_id)
        assert not worker.connect(clean_start=False, session_expiry_s=600).is_failure
        assert not worker.subscribe(f"$share/g/{settings.topic_prefix}/dev/+/+").is_failure
        worker.close()

        device = peers(settings, device_id, password)
        assert not device.connect().is_failure
        topic = device_topic(settings, device_id, "scan")
        for n in range(3):
            assert not device.publish(topic, f'{{"msg_id":"{n}"}}'.encode()).is_failure
        device.close()

        old_pid = local_broker_status(settings)["pid"]
        assert stop_local_broker(settings)
        assert start_local_broker(settings) != old_pid

        worker = peers(settings, settings.mqtt_service_user, settings.mqtt_service_password, client_id=worker_id)
        assert not worker.connect(clean_start=False, session_expiry_s=600).is_failure
        assert worker.session_present
        received = worker.wait_messages(3)
        assert sorted(m.payload for m in received) == [b'{"msg_id":"%d"}' % n for n in range(3)]
        # The account made at runtime was persisted by the dynamic-security plugin too.
        assert not peers(settings, device_id, password).connect().is_failure
    finally:
        stop_local_broker(settings)
