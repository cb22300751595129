"""The EPCIS Event Hash ID of GS1 CBV 2.0 (``ni:///sha-256;<hex>?ver=CBV2.0``).

An event's id is a digest of a canonical "pre-hash" string of its content, so the same event
captured twice, by anyone, has the same id, and an id never depends on where or when it was
exported. The algorithm is CBV 2.0 section 8.9 as the reference implementation
(RalphTro/epcis-event-hash-generator) runs it; its published examples are the tests
(../shared/epcis/event-hash).

What is implemented is what this platform emits and what the examples exercise with the same
features: the four event types' standard fields, quantity lists, CBV values in bare-word, URN or
Web URI form, GS1 Digital Link URIs (constrained to their canonical key on id.gs1.org), EPC pure
identity URNs of instances (converted with epcpy), sensor elements and ILMD whose members are
flat. Anything else (user extension fields, certificationInfo, persistentDisposition, EPC
patterns, nested ILMD) raises ``UnsupportedForHashError`` instead of hashing the event wrongly:
a wrong id would silently split one event into two in a partner's repository.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

from biip.checksums import gs1_standard_check_digit
from epcpy.utils.common import ConvertException
from epcpy.utils.parsers import epc_pure_identity_to_gs1_element_string

CBV: Final = "https://ref.gs1.org/cbv/"
GS1_VOC: Final = "https://gs1.org/voc/"
DL_ROOT: Final = "https://id.gs1.org"
DEFAULT_PREFIXES: Final[Mapping[str, str]] = {
    "cbv": CBV, "cbvmda": "urn:epcglobal:cbv:mda:", "gs1": GS1_VOC,
}

# Data elements that never take part in the hash (CBV 2.0 s.8.9.2; comments are not data).
_IGNORED: Final = frozenset({"type", "eventID", "recordTime", "errorDeclaration", "@context", "rdfs:comment",
                             "comment"})
_UNSUPPORTED: Final = frozenset({"certificationInfo", "persistentDisposition"})
_ID_LISTS: Final = ("parentID", "epcList", "inputEPCList", "childEPCs")
_QUANTITY_LISTS: Final = ("quantityList", "childQuantityList", "inputQuantityList")
_SENSOR_METADATA: Final = ("time", "startTime", "endTime", "deviceID", "deviceMetadata", "rawData",
                           "dataProcessingMethod", "bizRules")
_SENSOR_REPORT: Final = ("type", "exception", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod",
                         "time", "microorganism", "chemicalSubstance", "value", "component", "stringValue",
                         "booleanValue", "hexBinaryValue", "uriValue", "minValue", "maxValue", "meanValue",
                         "sDev", "percRank", "percValue", "uom", "coordinateReferenceSystem")
_ID_FIELDS: Final = frozenset({"deviceID", "deviceMetadata", "rawData", "dataProcessingMethod", "bizRules",
                               "microorganism", "chemicalSubstance", "uriValue"})
_TIME_FIELDS: Final = frozenset({"time", "startTime", "endTime"})
# The most specific key / key-qualifier combinations a Digital Link URI is reduced to.
_DL_KEYS: Final = ("00", "01", "253", "255", "401", "402", "414", "417", "8003", "8004", "8006", "8010", "8017",
                   "8018", "8013", "8020", "8001", "8002", "8007", "8009")
_DL_QUALIFIERS: Final[Mapping[str, tuple[str, ...]]] = {"01": ("21", "10", "235"), "414": ("254",),
                                                       "8006": ("21", "10"), "8010": ("8011",)}
_FRACTION: Final = re.compile(r"^(?P<head>[^.]+?)(?:\.(?P<frac>\d+))?(?P<offset>[Zz]|[+-]\d\d:\d\d)$")


class UnsupportedForHashError(ValueError):
    """The event uses a feature this implementation does not hash; it names which."""


def event_hash(event: Mapping[str, Any], prefixes: Mapping[str, str] = DEFAULT_PREFIXES) -> str:
    digest = hashlib.sha256(prehash(event, prefixes).encode()).hexdigest()
    return f"ni:///sha-256;{digest}?ver=CBV2.0"


def prehash(event: Mapping[str, Any], prefixes: Mapping[str, str] = DEFAULT_PREFIXES) -> str:
    """The canonical pre-hash string of one event (JSON/JSON-LD form, default context)."""
    unknown = set(event) - _IGNORED - set(_ORDER) - {"eventTime"}
    if unknown & _UNSUPPORTED:
        raise UnsupportedForHashError(f"{sorted(unknown & _UNSUPPORTED)} are not hashed by this implementation")
    if unknown:
        raise UnsupportedForHashError(f"user extension fields {sorted(unknown)} are not hashed by this implementation")
    out = [f"eventType={_text(event['type'])}", f"eventTime={canonical_time(event['eventTime'])}"]
    for name, render in _ORDER.items():
        if name in event and event[name] not in (None, [], {}):
            out.append(render(name, event[name], prefixes))
    return "".join(out)


# --- values ------------------------------------------------------------------------------------


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise UnsupportedForHashError(f"expected a string, got {value!r}")
    return value.strip()


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise UnsupportedForHashError(f"expected a number, got {value!r}")
    number = Decimal(str(value))
    # No trailing zeros, no exponent: 26.0 -> "26", 0.180 -> "0.18"
    return format(number.normalize(), "f") if number != number.to_integral_value() else str(int(number))


def canonical_time(value: object) -> str:
    """UTC with exactly three fractional digits, the 4th rounded half up."""
    match = _FRACTION.match(_text(value))
    if match is None:
        raise UnsupportedForHashError(f"{value!r} is not an RFC 3339 date-time with an offset")
    frac = Decimal("0." + (match["frac"] or "0")).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    whole = datetime.fromisoformat(match["head"].replace("t", "T") + match["offset"].upper().replace("Z", "+00:00"))
    # .9996 rounds up into the next second
    whole = whole.astimezone(UTC).replace(microsecond=0) + timedelta(milliseconds=int(frac * 1000))
    millis = whole.microsecond // 1000
    return whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _cbv(kind: str) -> Callable[[object, Mapping[str, str]], str]:
    """Bare word, urn:epcglobal:cbv:<kind>:word or CBV Web URI -> https://ref.gs1.org/cbv/<Prefix>-word."""
    web_prefix, urn = {"bizStep": ("BizStep", "bizstep"), "disposition": ("Disp", "disp"),
                       "btt": ("BTT", "btt"), "sdt": ("SDT", "sdt"), "comp": ("Comp", "comp")}[kind]

    def normalise(value: object, prefixes: Mapping[str, str]) -> str:
        text = _expand(_text(value), prefixes)
        if text.startswith(f"urn:epcglobal:cbv:{urn}:"):
            return f"{CBV}{web_prefix}-{text.rsplit(':', 1)[1]}"
        if ":" not in text:
            return f"{CBV}{web_prefix}-{text}"
        return text

    return normalise


def _vocab(value: object, prefixes: Mapping[str, str]) -> str:
    """A gs1: vocabulary term (sensor types, alert types): bare words are GS1 Web Vocabulary."""
    text = _expand(_text(value), prefixes)
    return text if ":" in text else GS1_VOC + text


def _expand(text: str, prefixes: Mapping[str, str]) -> str:
    prefix, sep, local = text.partition(":")
    if sep and prefix in prefixes and not local.startswith("//"):
        return prefixes[prefix] + local
    return text


def identifier(value: object, prefixes: Mapping[str, str] = DEFAULT_PREFIXES) -> str:
    """EPC URNs and Digital Link URIs to the canonical Digital Link on id.gs1.org; others as written."""
    text = _expand(_text(value), prefixes)
    if text.startswith("urn:epc:idpat:") or text.startswith("urn:epc:class:"):
        raise UnsupportedForHashError(f"EPC patterns and class URNs are not hashed by this implementation: {text}")
    if text.startswith("urn:epc:id:"):
        return _urn_to_dl(text)
    if text.startswith(("http://", "https://")):
        return _constrain_dl(text) or text
    return text


def _urn_to_dl(urn: str) -> str:
    try:
        element_string = epc_pure_identity_to_gs1_element_string(urn)
    except (ConvertException, ValueError, KeyError, AttributeError) as exc:
        raise UnsupportedForHashError(f"cannot convert {urn} to a Digital Link URI: {exc}") from None
    pairs = re.findall(r"\((\d+)\)([^(]*)", element_string)
    if not pairs:
        raise UnsupportedForHashError(f"cannot convert {urn} to a Digital Link URI")
    if pairs[0][0] == "414" and len(pairs) > 1 and pairs[1] == ("254", "0"):
        pairs = pairs[:1]  # an SGLN without extension is the GLN itself
    return DL_ROOT + "".join(f"/{ai}/{dl_escape(v)}" for ai, v in pairs)


def _constrain_dl(uri: str) -> str | None:
    """A Digital Link URI on any host to its key (and qualifier) on id.gs1.org; None when not one."""
    parts = [unquote(p) for p in urlsplit(uri).path.split("/") if p]
    aliases = {"gtin": "01", "sscc": "00", "gln": "414", "giai": "8004", "grai": "8003", "gsrn": "8018",
               "gdti": "253", "gcn": "255", "ginc": "401", "gsin": "402", "cpv": "22", "lot": "10", "ser": "21"}
    for start in range(len(parts) - 1):
        key = aliases.get(parts[start], parts[start])
        if key not in _DL_KEYS:
            continue
        pairs = [(aliases.get(parts[i], parts[i]), parts[i + 1]) for i in range(start, len(parts) - 1, 2)]
        if key in ("01", "02") and len(pairs[0][1]) < 14 and pairs[0][1].isdigit():
            pairs[0] = (key, pairs[0][1].zfill(14))
        kept = [pairs[0]]
        for qualifier in _DL_QUALIFIERS.get(key, ()):
            found = [v for ai, v in pairs[1:] if ai == qualifier]
            if found:
                kept.append((qualifier, found[0]))
                break
        return DL_ROOT + "".join(f"/{ai}/{dl_escape(v)}" for ai, v in kept)
    return None


def dl_escape(value: str) -> str:
    """Percent-encode a Digital Link path value: everything but A-Z a-z 0-9 - . _ ~ (GS1 DL 1.2 s.4.9)."""
    return quote(value, safe="")


# --- structure ---------------------------------------------------------------------------------


def _plain(render: Callable[[object, Mapping[str, str]], str] | None = None) \
        -> Callable[[str, object, Mapping[str, str]], str]:
    def field(name: str, value: object, prefixes: Mapping[str, str]) -> str:
        return f"{name}={render(value, prefixes) if render else _text(value)}"
    return field


def _id_list(name: str, value: object, prefixes: Mapping[str, str]) -> str:
    if name == "parentID":
        return f"parentID={identifier(value, prefixes)}"
    if not isinstance(value, list):
        raise UnsupportedForHashError(f"{name} must be a list")
    return name + "".join(sorted(f"epc={identifier(v, prefixes)}" for v in value))


def _quantity_list(name: str, value: object, prefixes: Mapping[str, str]) -> str:
    if not isinstance(value, list):
        raise UnsupportedForHashError(f"{name} must be a list")
    items = []
    for element in value:
        text = f"epcClass={_class(element['epcClass'], prefixes)}"
        if "quantity" in element:
            text += f"quantity={_number(element['quantity'])}"
        if "uom" in element:
            text += f"uom={_text(element['uom'])}"
        items.append("quantityElement" + text)
    return name + "".join(sorted(items))


def _class(value: object, prefixes: Mapping[str, str]) -> str:
    text = _text(value)
    if text.startswith(("http://", "https://")):
        return _constrain_dl(text) or text
    if text.startswith("urn:epc:class:lgtin:"):
        return _lgtin_to_dl(text)
    if text.startswith("urn:epc:"):
        raise UnsupportedForHashError(f"EPC class URNs other than LGTIN are not hashed: {text}")
    return text


def _lgtin_to_dl(urn: str) -> str:
    """urn:epc:class:lgtin:<company prefix>.<indicator + item reference>.<lot> -> /01/<gtin>/10/<lot>."""
    parts = urn.removeprefix("urn:epc:class:lgtin:").split(".", 2)
    if len(parts) != 3 or not (parts[0] + parts[1]).isdigit() or len(parts[0] + parts[1]) != 13:
        raise UnsupportedForHashError(f"{urn} is not an LGTIN class URN")
    body = parts[1][0] + parts[0] + parts[1][1:]
    gtin = body + str(gs1_standard_check_digit(body))
    return f"{DL_ROOT}/01/{gtin}/10/{dl_escape(unquote(parts[2]))}"


def _location(name: str, value: object, prefixes: Mapping[str, str]) -> str:
    if not isinstance(value, Mapping) or set(value) - {"id"}:
        raise UnsupportedForHashError(f"{name} with extension fields is not hashed by this implementation")
    return f"{name}id={identifier(value['id'], prefixes)}"


def _typed_list(item: str, type_kind: str) -> Callable[[str, object, Mapping[str, str]], str]:
    normalise_type = _cbv(type_kind)

    def render(name: str, value: object, prefixes: Mapping[str, str]) -> str:
        if not isinstance(value, list):
            raise UnsupportedForHashError(f"{name} must be a list")
        entries = []
        for entry in value:
            if set(entry) - {"type", item}:
                raise UnsupportedForHashError(f"{name} entries with extension fields are not hashed")
            typed = f"type={normalise_type(entry['type'], prefixes)}" if "type" in entry else ""
            target = identifier(entry[item], prefixes)
            entries.append(f"{typed}{item}={target}")
        return name + "".join(sorted(entries))

    return render


def _sensor_value(field: str, value: object, prefixes: Mapping[str, str]) -> str:
    if field in _TIME_FIELDS:
        return canonical_time(value)
    if field in ("type", "exception"):
        return _vocab(value, prefixes)
    if field == "component":
        return _cbv("comp")(value, prefixes)
    if field in _ID_FIELDS:
        return identifier(value, prefixes)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    return _text(value)


def _fields(obj: Mapping[str, Any], order: tuple[str, ...], what: str, prefixes: Mapping[str, str]) -> str:
    if set(obj) - set(order):
        raise UnsupportedForHashError(f"{what} fields {sorted(set(obj) - set(order))} are not hashed")
    return "".join(f"{f}={_sensor_value(f, obj[f], prefixes)}" for f in order if obj.get(f) is not None)


def _sensor_list(name: str, value: object, prefixes: Mapping[str, str]) -> str:
    if not isinstance(value, list):
        raise UnsupportedForHashError(f"{name} must be a list")
    elements = []
    for element in value:
        if set(element) - {"sensorMetadata", "sensorReport"}:
            raise UnsupportedForHashError("sensorElement extension fields are not hashed")
        text = "sensorElement"
        if element.get("sensorMetadata"):
            text += "sensorMetadata" + _fields(element["sensorMetadata"], _SENSOR_METADATA, "sensorMetadata",
                                               prefixes)
        reports = sorted("sensorReport" + _fields(r, _SENSOR_REPORT, "sensorReport", prefixes)
                         for r in element.get("sensorReport", []))
        elements.append(text + "".join(reports))
    return name + "".join(sorted(elements))


def _ilmd(name: str, value: object, prefixes: Mapping[str, str]) -> str:
    if not isinstance(value, Mapping):
        raise UnsupportedForHashError("ilmd must be an object")
    members = []
    for key, member in value.items():
        prefix, sep, local = key.partition(":")
        if not sep or prefix not in prefixes or not isinstance(member, str | int | float):
            raise UnsupportedForHashError(f"ilmd member {key!r} is not a flat, prefixed value")
        rendered = _number(member) if isinstance(member, int | float) else _text(member)
        members.append(f"{{{prefixes[prefix]}}}{local}={rendered}")
    return name + "".join(sorted(members))


_ORDER: Final[dict[str, Callable[[str, Any, Mapping[str, str]], str]]] = {
    "eventTimeZoneOffset": _plain(),
    **{name: _id_list for name in _ID_LISTS},
    **{name: _quantity_list for name in _QUANTITY_LISTS},
    "outputEPCList": _id_list,
    "outputQuantityList": _quantity_list,
    "action": _plain(),
    "transformationID": _plain(identifier),
    "bizStep": _plain(_cbv("bizStep")),
    "disposition": _plain(_cbv("disposition")),
    "readPoint": _location,
    "bizLocation": _location,
    "bizTransactionList": _typed_list("bizTransaction", "btt"),
    # The reference implementation and its vectors put destinations before sources.
    "destinationList": _typed_list("destination", "sdt"),
    "sourceList": _typed_list("source", "sdt"),
    "sensorElementList": _sensor_list,
    "ilmd": _ilmd,
}
