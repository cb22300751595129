"""GS1 codes as a scanner transmits them: symbology identifier, element strings, GS separators."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Final

from biip.checksums import gs1_standard_check_digit

GS: Final = "\x1d"
# Element strings of predefined length need no separator after them (GS1 General Specifications
# 7.8.5); every other one is ended by the separator unless it is the last of the message.
_FIXED: Final = {"00": 18, "01": 14, "02": 14, "11": 6, "12": 6, "13": 6, "15": 6, "16": 6, "17": 6, "20": 2}


def check_digit(body: str) -> str:
    return str(gs1_standard_check_digit(body))


def gtin14(company_prefix: str, item_ref: str, indicator: str = "0") -> str:
    """A GTIN-14 with a correct check digit: indicator + company prefix + item reference + check."""
    body = indicator + company_prefix + item_ref
    if len(body) != 13 or not body.isdigit():
        raise ValueError(f"indicator + prefix + item reference must be 13 digits, got {body!r}")
    return body + check_digit(body)


def sscc(company_prefix: str, serial_ref: int, extension: str = "3") -> str:
    body = extension + company_prefix
    body += str(serial_ref).zfill(17 - len(body))
    if len(body) != 17:
        raise ValueError("SSCC serial reference too long for the company prefix")
    return body + check_digit(body)


def wrong_check_digit(code: str) -> str:
    """The same digits with a check digit that is off by one: what a misprinted label gives."""
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def yymmdd(d: date) -> str:
    return d.strftime("%y%m%d")


def element_strings(parts: Sequence[tuple[str, str]], separator: str = GS, symbology: str = "]C1") -> str:
    """``[("01", gtin), ("10", lot), ("17", "261231")]`` as the scanner sends it."""
    out = [symbology]
    for i, (ai, value) in enumerate(parts):
        fixed = _FIXED.get(ai)
        if fixed is not None and len(value) != fixed:
            raise ValueError(f"AI ({ai}) takes {fixed} characters, got {value!r}")
        out.append(ai + value)
        if fixed is None and i < len(parts) - 1:
            out.append(separator)
    return "".join(out)
