"""The GS1 Barcode Syntax Engine's own test vectors (../shared/gs1-vectors) through the platform's
scan interpretation (core.gs1.interpret).

Every vector of the groups that describe reading a scan runs: scan data with symbology
identifiers, bracketed (HRI) element strings, "^" element strings (sent as ]C1 scan data),
Digital Link URIs, the cross-AI validation and linter vectors, check digits and Digital Link
percent-encoding. Each gives the library's result (success or failure; on success the same
trade-item fields as the canonical element string the library produces), or is listed in
DIFFERENCES with the reason, and the test asserts it still differs that way. Not run, because the
platform never does what they test: generating scan data, Digital Link URIs or HRI text, error
markup, the AI length table, and percent-decoding on its own (biip decodes inside the DL parser).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.epcis_hash import dl_escape
from core.gs1 import ScanCode, ScanCodeError, gtin_check_digit_ok, interpret

VECTORS = Path(__file__).parents[2].parent / "shared" / "gs1-vectors"
INTERPRETED = ("processScanData", "api_setScanData", "parseAIdata", "processAIdata", "validateAIs", "linters",
               "parseDLuri")

# Why each listed vector differs from the library (the README paragraph lists the same).
REASONS: dict[str, str] = {
    "plain": ("plain (non-GS1) data: the library accepts ]Q1/]d1/]J0 text and a string without the '^' GS1 flag as "
            "plain data; a scan must identify a trade item, so we refuse it (unparseable_code)"),
    "upc_a_12": ("]E0 with 12 digits: the library wants exactly 13; we also accept UPC-A as its 12 digits (scanners "
            "send it so)"),
    "composite": ("EAN/UPC + 2D composite ('|]e0...'): not supported, '|' is the GS substitute keyboard-wedge scanners "
            "are configured with"),
    "hri_escape": ("escaped parentheses inside HRI values: not supported by biip's HRI parser"),
    "repeats": ("the same AI repeated: the library's parser accepts it (its repeat check is separate); we refuse "
            "different values (conflicting_ai) and do not cap the number of AIs"),
    "options": ("needs a library option we do not offer (permitConvenienceAlphas, permitZeroSuppressedGTINinDLuris, "
            "permitUnknownAIs): we read the standard forms only"),
    "cross_ai": ("cross-AI rules (requisites, mutual exclusions, repeats of the same value): not checked; a label "
            "breaking them still names its trade item, and refusing it would lose a physical movement"),
    "linters": ("content linters of AIs the platform never reads (coupons 8110/8112, IBAN, ISO 3166/4217 codes, "
            "coordinates, piece numbers, ...): not checked"),
    "dl_host": ("Digital Link host and stem: we accept a mixed-case scheme and an IPv6 zone id (RFC 3986 allows both) "
            "and do not look for keys inside a non-GS1 stem"),
}
# reason -> the vectors that differ from the library for that reason (each asserted to differ)
DIFFERENCES: dict[str, list[str]] = {
    "plain": [
        "scandata.processScanData.007", "scandata.processScanData.008", "scandata.processScanData.009",
        "scandata.processScanData.010", "scandata.processScanData.016", "scandata.processScanData.017",
        "scandata.processScanData.018", "scandata.processScanData.019", "scandata.processScanData.023",
        "scandata.processScanData.024", "scandata.processScanData.025", "scandata.processScanData.026",
        "scandata.processScanData.029", "scandata.processScanData.055", "ai.processAIdata.002",
    ],
    "upc_a_12": [
        "scandata.processScanData.040",
    ],
    "composite": [
        "scandata.processScanData.045", "scandata.processScanData.052",
    ],
    "hri_escape": [
        "ai.parseAIdata.007", "ai.parseAIdata.008",
    ],
    "repeats": [
        "ai.parseAIdata.030", "ai.processAIdata.082",
    ],
    "options": [
        "ai.validateAIs.012", "dl.parseDLuri.038", "dl.parseDLuri.039", "dl.parseDLuri.040", "dl.parseDLuri.043",
        "dl.parseDLuri.045", "dl.parseDLuri.047", "dl.parseDLuri.049", "dl.parseDLuri.051", "dl.parseDLuri.085",
        "dl.parseDLuri.086", "dl.parseDLuri.092", "dl.parseDLuri.094", "dl.parseDLuri.096", "dl.parseDLuri.098",
        "dl.parseDLuri.113",
    ],
    "cross_ai": [
        "ai.validateAIs.018", "ai.validateAIs.019", "ai.validateAIs.020", "ai.validateAIs.021", "ai.validateAIs.022",
        "ai.validateAIs.023", "ai.validateAIs.024", "ai.validateAIs.025", "ai.validateAIs.026", "ai.validateAIs.027",
        "ai.validateAIs.032", "ai.validateAIs.033", "ai.validateAIs.034", "ai.validateAIs.035", "ai.validateAIs.036",
        "ai.validateAIs.039", "ai.validateAIs.042", "ai.validateAIs.044", "ai.validateAIs.055", "ai.validateAIs.057",
        "ai.validateAIs.063", "ai.validateAIs.065", "ai.validateAIs.070", "ai.validateAIs.073", "ai.validateAIs.076",
    ],
    "linters": [
        "ai.linters.009", "ai.linters.010", "ai.linters.011", "ai.linters.012", "ai.linters.013", "ai.linters.014",
        "ai.linters.016", "ai.linters.018", "ai.linters.019", "ai.linters.020", "ai.linters.021", "ai.linters.022",
        "ai.linters.023", "ai.linters.024", "ai.linters.025", "ai.linters.026", "ai.linters.027", "ai.linters.028",
        "ai.linters.029", "ai.linters.030", "ai.linters.032", "ai.linters.033", "ai.linters.034", "ai.linters.035",
        "ai.linters.036", "ai.linters.037", "ai.linters.038", "ai.linters.039", "ai.linters.040", "ai.linters.041",
        "ai.linters.042", "ai.linters.043", "ai.linters.044", "ai.linters.045", "ai.linters.046", "ai.linters.047",
        "ai.linters.048", "ai.linters.049", "ai.linters.050", "ai.linters.051", "ai.linters.052", "ai.linters.053",
        "ai.linters.054", "ai.linters.055", "ai.linters.056", "ai.linters.057", "ai.linters.058", "ai.linters.059",
        "ai.linters.060", "ai.linters.061", "ai.linters.062", "ai.linters.063", "ai.linters.064", "ai.linters.065",
        "ai.linters.066", "ai.linters.067", "ai.linters.068", "ai.linters.069", "ai.linters.070", "ai.linters.071",
        "ai.linters.072", "ai.linters.073", "ai.linters.074", "ai.linters.075", "ai.linters.076", "ai.linters.077",
        "ai.linters.078", "ai.linters.079", "ai.linters.080", "ai.linters.081", "ai.linters.082", "ai.linters.083",
        "ai.linters.084", "ai.linters.085", "ai.linters.086", "ai.linters.087", "ai.linters.088", "ai.linters.089",
        "ai.linters.090", "ai.linters.091", "ai.linters.093", "ai.linters.095", "ai.linters.096",
    ],
    "dl_host": [
        "dl.parseDLuri.013", "dl.parseDLuri.024", "dl.parseDLuri.036",
    ],
}
DIFFERENT = {vector: reason for reason, vectors in DIFFERENCES.items() for vector in vectors}


def _load() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []
    for name in ("scandata.json", "ai_parse.json", "digital_link.json"):
        vectors.extend(json.loads((VECTORS / name).read_text()))
    return vectors


ALL = _load()
READ = [v for v in ALL if v["group"] in INTERPRETED]


def _as_scan(data: str) -> str:
    """The library's "^" data string as the ]C1 scan data a reader would send."""
    return "]C1" + data[1:].replace("^", "\x1d") if data.startswith("^") else data


def _read(data: str) -> ScanCode | None:
    try:
        return interpret(_as_scan(data))
    except ScanCodeError:
        return None


def _agrees(vector: dict[str, Any]) -> bool:
    expect_ok = vector["expected"] == "GS1_LINTER_OK" if vector["group"] == "linters" else vector["expect_ok"]
    ours = _read(vector["input"])
    if (ours is not None) != expect_ok:
        return False
    expected = vector.get("expected")
    if ours is not None and isinstance(expected, str) and expected.startswith("^"):
        # the same trade-item fields as the element string the library extracted
        return _read(expected) in (None, ours)
    return True


def test_the_vector_files_are_the_documented_ones() -> None:
    assert len(ALL) == 117 + 373 + 229
    assert len(READ) == 56 + 2 + 31 + 83 + 77 + 99 + 121
    assert set(DIFFERENT) <= {v["id"] for v in READ} and set(DIFFERENCES) == set(REASONS)


@pytest.mark.parametrize("vector", READ, ids=[v["id"] for v in READ])
def test_scan_interpretation_vector(vector: dict[str, Any]) -> None:
    if vector["id"] in DIFFERENT:
        reason = REASONS[DIFFERENT[vector["id"]]]
        assert not _agrees(vector), f"now agrees with the library: drop it from DIFFERENCES ({reason})"
    else:
        assert _agrees(vector)


@pytest.mark.parametrize("vector", [v for v in ALL if v["group"] == "validateParity"], ids=lambda v: v["id"])
def test_check_digit_vector(vector: dict[str, Any]) -> None:
    assert gtin_check_digit_ok(vector["input"]) is vector["expect_ok"]
    assert gtin_check_digit_ok(vector["expected"])  # the corrected number


@pytest.mark.parametrize("vector", [v for v in ALL if v["group"] == "URIescape"], ids=lambda v: v["id"])
def test_digital_link_path_escaping_vector(vector: dict[str, Any]) -> None:
    assert dl_escape(vector["input"]) == vector["expected"]["path"]
