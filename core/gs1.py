"""Interpretation of a raw scanned code (GS1 element strings or a plain GTIN) with ``biip``.

Input is the ``code`` of a ``scan`` message exactly as the scanner sent it; output is a
``ScanCode`` with the identifiers the stock ledger needs, or a ``ScanCodeError`` whose ``reason``
is a stable code for the dead letter.

Choices:

- Dispatch is ours rather than ``biip.parse``'s "try every parser" result, because a bare
  digit string such as ``96385074`` is both a valid EAN-8 and a valid GS1 message (AI 96), and
  ``biip.parse`` reports both. A symbology identifier decides when present (``]E0``/``]E3``/
  ``]E4``/``]I1`` are GTIN carriers; ``]C1``/``]d2``/``]Q3``/``]e0``/... carry GS1 element
  strings). Without one, or with a non-GS1 one, a bare string of 8, 12, 13 or 14 ASCII digits is
  a GTIN (that is what EAN/UPC/ITF-14 scanners send) and anything else is read as GS1 element
  strings, or as a GS1 Digital Link URI when it starts with ``http``.
- biip 5.2 does not raise on check-digit failures inside a GS1 message: it records them in
  ``gtin_error``/``sscc_error`` of the element string and carries on. We verify the mod-10
  check digit of AI 00/01/02 ourselves so that a wrong one is always ``bad_check_digit``,
  never a silently missing field.
- Date validation in biip is turned off and redone here, so that an impossible AI 17 date
  (``260231``) gets its own reason instead of a generic parse failure. Day ``00`` means the last
  day of the month (biip does that). The century of a two-digit year follows the GS1 sliding
  window, which biip computes from the current year: the only clock dependency here, and it
  only matters for years about 50 years away.
- The same AI twice with different values is ``conflicting_ai``: which one is meant cannot be
  known, so we do not pick.
- ``]E0`` carries EAN-13/UPC-A as 13 digits (UPC-A also as its 12), and UPC-E as its 8 digits (number system, six
  payload digits, check digit); the 8-digit form is expanded to the UPC-A GTIN before checking,
  so ``]E001234565`` is GTIN 00012345000065. ``]E4`` is EAN-8.
- Keyboard-wedge apps send the human readable form ``(01)09506000134352(10)L7``; a code that
  starts with ``(`` is read as that (spaces between elements allowed).
- AI (37), the count of trade items, must be at least 1: a zero count is ``invalid_count`` here,
  not a database error later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from biip import ParseConfig, ParseError
from biip.checksums import gs1_standard_check_digit
from biip.gs1_application_identifiers import GS1ApplicationIdentifier
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString
from biip.gs1_messages import GS1Message
from biip.symbology import GS1Symbology, SymbologyIdentifier
from biip.upc import Upc

DEFAULT_SEPARATORS: Final = ("\x1d", "|")
GTIN_LENGTHS: Final = frozenset({8, 12, 13, 14})
_DATE_AIS: Final = frozenset({"11", "12", "13", "15", "16", "17"})
# AIs whose value starts with a GS1 key ending in a mod-10 check digit: how many digits it has.
_CHECKED_AIS: Final = {"00": 18, "01": 14, "02": 14, "253": 13, "255": 13, "410": 13, "411": 13, "412": 13,
                       "413": 13, "414": 13, "415": 13, "416": 13, "417": 13, "8003": 14, "8006": 14, "8017": 18,
                       "8018": 18}
# Digital Link key qualifiers of each primary key: they belong in the path, never in the query.
_DL_QUALIFIERS: Final = {"01": frozenset({"22", "10", "21", "235"}), "8006": frozenset({"22", "10", "21"}),
                         "414": frozenset({"254", "7040"}), "8010": frozenset({"8011"}),
                         "8017": frozenset({"8019"}), "8018": frozenset({"8019"})}
_EMPTY_HRI_VALUE: Final = re.compile(r"\(\d{2,4}\)\s*(?=\(|$)")
_EAN13_WITH_ADD_ON_LEN: Final = 13
_UPC_E_LEN: Final = 8
# ]E0 is 13 digits by the AIM rules; scanners also send UPC-A as its 12 digits and UPC-E as 8.
_E0_LENGTHS: Final = frozenset({8, 12, 13})
_DOTCODE_GS1: Final = "]J1"  # GS1 DotCode: biip 5.2 does not know the ]J identifiers


class Reason:
    """``ScanCodeError.reason`` values; stable strings that operators filter dead letters on."""

    EMPTY_CODE: Final = "empty_code"
    UNPARSEABLE_CODE: Final = "unparseable_code"
    BAD_CHECK_DIGIT: Final = "bad_check_digit"
    INVALID_GTIN: Final = "invalid_gtin"
    INVALID_DATE: Final = "invalid_date"
    CONFLICTING_AI: Final = "conflicting_ai"
    INVALID_COUNT: Final = "invalid_count"


class ScanCodeError(ValueError):
    """A scanned code that cannot be accepted; ``reason`` is one of ``Reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True, slots=True)
class ScanCode:
    gtin: str | None  # GTIN-14
    sscc: str | None  # 18 digits
    content_gtin: str | None  # AI 02, GTIN-14
    lot: str | None
    expiry: date | None
    serial: str | None
    count: int | None


def _is_digits(value: str) -> bool:
    # str.isdigit() also accepts non-ASCII digits such as '٣', which no barcode carries.
    return value.isascii() and value.isdigit()


def _mod10_ok(value: str) -> bool:
    return _is_digits(value) and len(value) >= 2 and gs1_standard_check_digit(value[:-1]) == int(value[-1])


def gtin_check_digit_ok(value: str) -> bool:
    """True when ``value`` is an 8/12/13/14-digit GTIN whose GS1 mod-10 check digit is right."""
    return len(value) in GTIN_LENGTHS and _mod10_ok(value)


def normalise_gtin(value: str) -> str:
    """Return the GTIN-14 form of an 8/12/13/14-digit GTIN, after verifying its check digit.

    Raises ``ScanCodeError`` with reason ``invalid_gtin`` (not digits, wrong length) or
    ``bad_check_digit``.
    """
    if not _is_digits(value) or len(value) not in GTIN_LENGTHS:
        raise ScanCodeError(Reason.INVALID_GTIN, f"a GTIN has 8, 12, 13 or 14 digits, got {value!r}")
    if not _mod10_ok(value):
        expected = gs1_standard_check_digit(value[:-1])
        raise ScanCodeError(Reason.BAD_CHECK_DIGIT, f"GTIN {value!r} has check digit {value[-1]}, expected {expected}")
    return value.zfill(14)


def interpret(code: str, separators: Sequence[str] = DEFAULT_SEPARATORS) -> ScanCode:
    """Interpret a raw scanned code; raise ``ScanCodeError`` when it cannot be accepted.

    ``separators`` are the characters that end a variable-length element string: GS (0x1D) and
    whatever substitute the scanners are configured to send. Each must be one character.
    """
    if isinstance(separators, str) or any(len(s) != 1 for s in separators):
        raise ValueError(f"separators must be single characters, got {separators!r}")
    seps = tuple(separators)
    # Scanners commonly append CR/LF; Python counts GS (0x1D) as whitespace too, and a leading
    # or trailing GS (a transmitted FNC1) carries no data.
    value = code.strip()
    if not value:
        raise ScanCodeError(Reason.EMPTY_CODE, "the scanned code is empty")

    symbology: GS1Symbology | None = None
    identifier_code = ""
    if value.startswith(_DOTCODE_GS1):
        data = value[len(_DOTCODE_GS1):].strip("".join(seps)).strip()
        if not data:
            raise ScanCodeError(Reason.EMPTY_CODE, f"no data after the symbology identifier in {code!r}")
        return _from_element_strings(data, code, seps)
    if value.startswith("]"):
        try:
            identifier = SymbologyIdentifier.extract(value)
        except (ParseError, IndexError, ValueError) as exc:
            raise ScanCodeError(Reason.UNPARSEABLE_CODE, f"bad symbology identifier in {code!r}") from exc
        symbology = identifier.gs1_symbology
        identifier_code = identifier.value
        value = value[len(identifier) :]
    value = value.strip("".join(seps)).strip()
    if not value:
        raise ScanCodeError(Reason.EMPTY_CODE, f"no data after the symbology identifier in {code!r}")

    if symbology in GS1Symbology.with_gtin():
        if symbology is GS1Symbology.EAN_13_WITH_ADD_ON:
            # The 2- or 5-digit add-on (periodical issue, price) is not part of the GTIN.
            value = value[:_EAN13_WITH_ADD_ON_LEN]
        if identifier_code == "]E0" and len(value) == _UPC_E_LEN:
            return _from_upc_e(value, code)
        if identifier_code == "]E0" and len(value) not in _E0_LENGTHS:
            raise ScanCodeError(Reason.UNPARSEABLE_CODE,
                                f"{code!r}: ]E0 carries 13 digits (EAN-13, UPC-A), 12 (UPC-A) or 8 (UPC-E)")
        return _from_gtin(value, code)
    if symbology not in GS1Symbology.with_gs1_messages() and _is_digits(value) and len(value) in GTIN_LENGTHS:
        return _from_gtin(value, code)
    return _from_element_strings(value, code, seps)


def _from_gtin(value: str, code: str) -> ScanCode:
    if not _is_digits(value) or len(value) not in GTIN_LENGTHS:
        raise ScanCodeError(Reason.UNPARSEABLE_CODE, f"{code!r} is neither GS1 element strings nor a GTIN")
    return ScanCode(
        gtin=normalise_gtin(value), sscc=None, content_gtin=None, lot=None, expiry=None, serial=None, count=None
    )


def _check_digital_link(uri: str, code: str) -> None:
    """What biip 5.2 lets through but a GS1 Digital Link may not carry (DL 1.2 s.4): a GTIN that is
    not 14 digits, and in the query string an empty value, an unknown AI, a key qualifier, or an
    AI the path already has."""
    parts = urlsplit(uri)
    segments = [s for s in parts.path.split("/") if s]
    path_ais = {segments[i] for i in range(len(segments) - 1) if _is_digits(segments[i])}
    # 01/235 (TPX) is a qualifier path of its own: 10/21/22 may then come as attributes.
    qualifiers = frozenset() if "235" in path_ais else frozenset().union(
        *(_DL_QUALIFIERS.get(ai, frozenset()) for ai in path_ais))
    for i in range(len(segments) - 1):
        if segments[i] == "01" and (len(segments[i + 1]) != 14 or not _is_digits(segments[i + 1])):
            raise ScanCodeError(Reason.INVALID_GTIN, f"{code!r}: a Digital Link GTIN has 14 digits")
    seen: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if not _is_digits(key):
            continue  # other query parameters are not AI data (DL 1.2: ignored)
        problem = ("has no value" if not value else "is a key qualifier: it belongs in the path"
                   if key in qualifiers else "repeats an AI of the path" if key in path_ais
                   else "is not a GS1 Application Identifier" if not _known_ai(key) else None)
        if problem is None and key in seen:
            problem = "appears twice"
        seen[key] = value
        if problem is not None:
            raise ScanCodeError(Reason.UNPARSEABLE_CODE, f"{code!r}: query AI ({key}) {problem}")


def _check_separators(value: str, elements: Sequence[GS1ElementString], code: str, seps: tuple[str, ...]) -> None:
    """A variable-length element string ends at a separator or at the end of the message. biip 5.2
    may end one early where its pattern allows (AI 7007 "211225211" read as 7007 "211225" + AI 21
    "1"): that would invent an AI the label does not have."""
    pos = 0
    for index, element in enumerate(elements):
        text = element.ai.ai + element.value
        if not value.startswith(text, pos):
            return  # not a plain concatenation (biip normalised something): nothing to check
        pos += len(text)
        last = index == len(elements) - 1
        if element.ai.separator_required and not last:
            if pos >= len(value) or value[pos] not in seps:
                raise ScanCodeError(Reason.UNPARSEABLE_CODE,
                                    f"AI ({element.ai.ai}) in {code!r} is variable-length and not ended by a "
                                    f"separator: its value is longer than GS1 allows or malformed")
            pos += 1
        while pos < len(value) and value[pos] in seps:
            pos += 1


def _known_ai(ai: str) -> bool:
    try:
        return GS1ApplicationIdentifier.extract(ai).ai == ai
    except ParseError:
        return False


def _from_upc_e(value: str, code: str) -> ScanCode:
    """UPC-E under ]E0: expand to the UPC-A GTIN (whose check digit is the UPC-E's own)."""
    if not _is_digits(value):
        raise ScanCodeError(Reason.UNPARSEABLE_CODE, f"{code!r}: a UPC-E has 8 digits")
    try:
        gtin = Upc.parse(value).as_gtin_14()
    except ParseError as exc:
        raise ScanCodeError(Reason.BAD_CHECK_DIGIT if "check digit" in str(exc).lower() else Reason.INVALID_GTIN,
                            f"{code!r} is not a valid UPC-E: {exc}") from exc
    return ScanCode(gtin=gtin, sscc=None, content_gtin=None, lot=None, expiry=None, serial=None, count=None)


def _from_element_strings(value: str, code: str, seps: tuple[str, ...]) -> ScanCode:
    config = ParseConfig(separator_chars=seps, gs1_element_strings_verify_date=False)
    elements: Sequence[GS1ElementString]
    try:
        if value.lower().startswith(("http://", "https://")):
            _check_digital_link(value, code)
            elements = GS1DigitalLinkURI.parse(value, config=config).element_strings
        elif value.startswith("("):
            if _EMPTY_HRI_VALUE.search(value):
                raise ScanCodeError(Reason.UNPARSEABLE_CODE, f"{code!r} has an AI without a value")
            elements = GS1Message.parse_hri(value, config=config).element_strings
        else:
            elements = GS1Message.parse(value, config=config).element_strings
            _check_separators(value, elements, code, seps)
    except ParseError as exc:
        raise ScanCodeError(
            Reason.UNPARSEABLE_CODE, f"{code!r} is neither GS1 element strings nor a GTIN: {exc}"
        ) from exc

    values: dict[str, str] = {}
    expiry: date | None = None
    for element in elements:
        ai = element.ai.ai
        previous = values.setdefault(ai, element.value)
        if previous != element.value:
            raise ScanCodeError(
                Reason.CONFLICTING_AI, f"AI ({ai}) appears twice with {previous!r} and {element.value!r} in {code!r}"
            )
        key = element.value[: _CHECKED_AIS.get(ai, 0)]
        if ai in _CHECKED_AIS and not _mod10_ok(key):
            expected = gs1_standard_check_digit(key[:-1]) if _is_digits(key[:-1]) else "?"
            raise ScanCodeError(
                Reason.BAD_CHECK_DIGIT,
                f"AI ({ai}) {element.value!r} has check digit {key[-1:]!r}, expected {expected}",
            )
        # The mod-10 check passed, so any error biip still reports is about something else.
        other_error = element.gtin_error or element.sscc_error
        if other_error:
            raise ScanCodeError(Reason.UNPARSEABLE_CODE, f"AI ({ai}) in {code!r}: {other_error}")
        if ai in _DATE_AIS and element.date is None:
            raise ScanCodeError(Reason.INVALID_DATE, f"AI ({ai}) {element.value!r} is not a valid date")
        if ai == "17":
            expiry = element.date

    count = values.get("37")
    if count is not None and int(count) < 1:
        raise ScanCodeError(Reason.INVALID_COUNT, f"AI (37) count of trade items is {count!r}: it must be at least 1")
    return ScanCode(
        gtin=values.get("01"),
        sscc=values.get("00"),
        content_gtin=values.get("02"),
        lot=values.get("10"),
        expiry=expiry,
        serial=values.get("21"),
        count=int(count) if count is not None else None,
    )
