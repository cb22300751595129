"""Wire bytes to contract records: the adapter step in front of ``core.contract``.

It owns what core cannot know: payload size, UTF-8/JSON decoding, and which devices exist.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from core.contract import Decoded, Kind, Limits, Reason, Record, Rejection, decode_payload, parse_topic

DEAD_PAYLOAD_KEEP = 64 * 1024  # bytes of an oversized payload kept for inspection
# Up to this many rejected elements of one array payload get a dead letter each (replayable one
# by one); beyond it the payload is ONE dead letter listing the reasons, so a device cannot turn
# one message into 100,000 rows.
MAX_ELEMENT_LETTERS = 10
# Per-element reasons kept in that one letter's detail (the counts by reason cover the rest).
MAX_REASONS_LISTED = 100
MANY_REJECTED = "rejected_elements"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One MQTT message as received; ``mid``/``qos`` are what must be acked after commit."""

    topic: str
    payload: bytes
    received_at: datetime
    mid: int = 0
    qos: int = 1
    # Devices must never publish retained (a retained copy would be replayed to every new
    # subscriber); the broker cannot refuse it, so the worker dead-letters it and clears the copy.
    retain: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    element_index: int | None
    payload: bytes
    payload_size: int

    @property
    def fingerprint(self) -> bytes:
        h = hashlib.sha256(self.topic.encode())
        h.update(b"\0" + str(self.element_index).encode() + b"\0")
        h.update(self.payload)
        return h.digest()


@dataclass(slots=True)
class Prepared:
    records: list[Record] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Parsed:
    msg: Inbound
    device_id: str
    kind: Kind
    value: object


def _dead(msg: Inbound, device_id: str | None, rejection: Rejection) -> DeadLetter:
    if rejection.index is None:
        payload = msg.payload
        if rejection.reason == Reason.PAYLOAD_TOO_LARGE:
            payload = payload[:DEAD_PAYLOAD_KEEP]
        size = len(msg.payload)
    else:
        payload = orjson.dumps(rejection.obj)
        size = len(payload)
    return DeadLetter(msg.received_at, msg.topic, device_id, rejection.reason, rejection.detail,
                      rejection.index, payload, size)


DOWNLINK_KIND = "config"
# Not a core contract reason: it is about MQTT delivery, not the payload.
RETAINED_PUBLISH = "retained_publish"
# Every server-to-device topic (CONTRACT 1 and 3.1): the feedback is not retained, so ingest's
# wildcard subscription does receive it.
DOWNLINK_KINDS = (DOWNLINK_KIND, "tasks", "feedback")


def _parse(msg: Inbound, prefix: str, max_payload: int) -> _Parsed | DeadLetter | None:
    if msg.topic.rsplit("/", 1)[-1] in DOWNLINK_KINDS:
        # Our own retained downlink matches the same wildcard; devices cannot publish there (ACL).
        return None
    if msg.retain and not msg.payload:
        # The worker's own clearing of a retained copy (an empty retained publish) coming back.
        return None
    topic = parse_topic(msg.topic, prefix)
    if isinstance(topic, Rejection):
        return _dead(msg, None, topic)
    device_id, kind = topic
    if msg.retain:
        return _dead(msg, device_id, Rejection(
            RETAINED_PUBLISH, "devices must not publish retained messages; the retained copy was cleared"))
    if len(msg.payload) > max_payload:
        return _dead(msg, device_id, Rejection(
            Reason.PAYLOAD_TOO_LARGE, f"payload is {len(msg.payload)} bytes, the limit is {max_payload}"))
    try:
        value = orjson.loads(msg.payload)
    except orjson.JSONDecodeError as exc:
        return _dead(msg, device_id, Rejection(Reason.INVALID_JSON, f"not UTF-8 JSON: {exc}"))
    return _Parsed(msg, device_id, kind, value)


def prepare(messages: Iterable[Inbound], prefix: str, limits: Limits, max_payload: int,
            known_devices: Callable[[Collection[str]], Collection[str]]) -> Prepared:
    """Decode a batch. ``known_devices`` answers which of the given ids are registered."""
    out = Prepared()
    parsed: list[_Parsed] = []
    for msg in messages:
        item = _parse(msg, prefix, max_payload)
        if item is None:
            continue
        if isinstance(item, DeadLetter):
            out.dead.append(item)
        else:
            parsed.append(item)
    known = known_devices({p.device_id for p in parsed}) if parsed else ()
    for p in parsed:
        if p.device_id not in known:
            out.dead.append(_dead(p.msg, p.device_id, Rejection(
                Reason.UNKNOWN_DEVICE, f"device {p.device_id!r} is not registered")))
            continue
        decoded: Decoded = decode_payload(p.value, p.device_id, p.kind, p.msg.received_at, limits)
        out.records.extend(decoded.records)
        out.dead.extend(_element_letters(p.msg, p.device_id, decoded.rejections))
    return out


def _element_letters(msg: Inbound, device_id: str, rejections: Sequence[Rejection]) -> list[DeadLetter]:
    """A bounded number of dead letters for one payload, whatever its array length."""
    if len(rejections) <= MAX_ELEMENT_LETTERS:
        return [_dead(msg, device_id, r) for r in rejections]
    counts = Counter(r.reason for r in rejections)
    listed = [{"index": r.index, "reason": r.reason, "detail": r.detail[:200]}
              for r in rejections[:MAX_REASONS_LISTED]]
    summary = ", ".join(f"{reason} x{n}" for reason, n in counts.most_common())
    detail = (f"{len(rejections)} elements rejected ({summary}); the first {len(listed)}: "
              + orjson.dumps(listed).decode())
    reason = next(iter(counts)) if len(counts) == 1 else MANY_REJECTED
    return [DeadLetter(msg.received_at, msg.topic, device_id, reason, detail, None, msg.payload, len(msg.payload))]
