"""The CBV 2.0 event hash against the reference implementation's published examples
(../shared/epcis/event-hash): every event is either hashed exactly as published, or refused
with a clear error because it uses a feature this implementation does not hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.epcis_hash import DEFAULT_PREFIXES, UnsupportedForHashError, canonical_time, event_hash, identifier

VECTORS = Path(__file__).parents[2].parent / "shared" / "epcis" / "event-hash"

# (document, event index): the 16 of 43 events that use features we never emit. Each is refused.
REFUSED = {
    ("CertificationInfoAndSensorReportWithCRS", 0): "certificationInfo",
    ("ReferenceEventHashAlgorithm", 0): "user extension",
    ("ReferenceEventHashAlgorithm3", 0): "user extension",
    ("TimeStampRoundOff", 2): "certificationInfo",
    ("epcisDocHavingEventWithIgnoreFields", 0): "user extension",
    ("epcisQueryDocHavingEventWithIgnoreFields", 0): "user extension",
    ("epcisDocWithAllGS1Keys", 0): "urn:epc:idpat",
    ("epcisDocWithCustomSchemaInContext", 0): "user extension",
    ("epcisDocWithCustomSchemaInContext", 1): "user extension",
    ("epcisDocWithVariousEventTypes", 11): "urn:epc:idpat",
    ("epcisDocWithXMLstartTagAndErrorDeclaration", 0): "urn:epc:idpat",
    ("epcisQueryDocument", 1): "user extension",
    ("epclist_normalisation", 0): "class URNs",
    ("persistentDisposition", 0): "persistentDisposition",
    ("persistentDisposition", 1): "persistentDisposition",
    ("ralfsChaosExample", 0): "user extension",
}


def _cases() -> list[tuple[str, int, dict[str, Any], dict[str, str], str]]:
    cases = []
    for path in sorted(VECTORS.glob("*.jsonld")):
        doc = json.loads(path.read_text())
        contexts = doc.get("@context", [])
        prefixes = dict(DEFAULT_PREFIXES)
        for context in contexts if isinstance(contexts, list) else [contexts]:
            if isinstance(context, dict):
                prefixes.update({k: v for k, v in context.items() if isinstance(v, str)})
        body = doc["epcisBody"]
        events = body["eventList"] if "eventList" in body else body["queryResults"]["resultsBody"]["eventList"]
        hashes = path.with_suffix(".hashes").read_text().split("\n")
        for index, event in enumerate(events):
            cases.append((path.stem, index, event, prefixes, hashes[index]))
    return cases


CASES = _cases()


def test_all_43_published_events_are_here() -> None:
    assert len(CASES) == 43 and len(REFUSED) == 16


@pytest.mark.parametrize(("name", "index", "event", "prefixes", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_published_event_hash(name: str, index: int, event: dict[str, Any], prefixes: dict[str, str],
                              expected: str) -> None:
    refusal = REFUSED.get((name, index))
    if refusal is None:
        assert event_hash(event, prefixes) == expected
    else:
        with pytest.raises(UnsupportedForHashError, match=refusal):
            event_hash(event, prefixes)


def test_event_id_and_record_time_and_error_declaration_do_not_change_the_hash() -> None:
    _name, _, event, prefixes, expected = next(c for c in CASES if c[0] == "epcisDocWithSingleEvent")
    changed = {**event, "eventID": "urn:uuid:x", "recordTime": "2030-01-01T00:00:00Z",
               "errorDeclaration": {"declarationTime": "2030-01-01T00:00:00Z", "reason": "incorrect_data"}}
    assert event_hash(changed, prefixes) == expected
    assert event_hash({**event, "action": "ADD"}, prefixes) != expected


@pytest.mark.parametrize(("value", "expected"), [
    ("2023-01-18T11:04:03.1415Z", "2023-01-18T11:04:03.142Z"),
    ("2023-01-18T11:04:03.1414Z", "2023-01-18T11:04:03.141Z"),
    ("2023-01-18T12:04:03+01:00", "2023-01-18T11:04:03.000Z"),
    ("2023-01-18T23:59:59.9996Z", "2023-01-19T00:00:00.000Z"),
])
def test_time_is_utc_with_milliseconds_rounded_half_up(value: str, expected: str) -> None:
    assert canonical_time(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("urn:epc:id:sgtin:0614141.107346.2017", "https://id.gs1.org/01/10614141073464/21/2017"),
    ("urn:epc:id:sgln:4012345.00005.0", "https://id.gs1.org/414/4012345000054"),
    ("https://example.com/gtin/9780345418913/ser/AB%2F1?17=261231", "https://id.gs1.org/01/09780345418913/21/AB%2F1"),
    ("urn:cargotrace:location:DOCK-1", "urn:cargotrace:location:DOCK-1"),
])
def test_identifiers_are_canonical_digital_links(value: str, expected: str) -> None:
    assert identifier(value) == expected
