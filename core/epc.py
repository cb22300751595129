"""Decoding of the EPC an RFID reader reports (hex) into the GS1 keys the ledger uses, with ``epcpy``.

Choices:

- The hex must be whole 16-bit words (Gen2 EPC memory is word-addressed), at least 96 bits (the
  contract's minimum) and at most 496 bits (the largest EPC a Gen2 PC word can announce).
  Anything else is an ``EpcError``.
- SGTIN (96 and 198), SSCC-96 and SGLN (96 and 195) are the schemes that move stock or name a
  place. A value with one of their headers that does not decode, or whose length does not fit
  the scheme, is an ``EpcError``: a corrupt encoding of a scheme we act on must be visible, not
  filed as "unknown". Bits past the scheme's length are accepted only when they are all zero,
  because tags with more EPC memory than the scheme needs are often reported with zero padding;
  epcpy itself ignores trailing bits whatever they are.
- Every other header is scheme ``unknown``: recorded, moves nothing. epcpy is still asked for a
  pure identity URI (GID, GRAI, GIAI, ...) so the record says what the tag is, when it can.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from epcpy.epc_schemes.sgtin import SGTIN, SGTINFilterValue
from epcpy.utils.common import ConvertException
from epcpy.utils.parsers import hex_to_tag_encodable

from core.gs1 import ScanCodeError, normalise_gtin

Scheme = Literal["sgtin", "sscc", "sgln", "unknown"]

_HEX_RE: Final = re.compile(r"^[0-9A-F]+$")
_MIN_HEX: Final = 24  # 96 bits
_MAX_HEX: Final = 124  # 496 bits: 31 words, the most a Gen2 PC length field can announce
_SGTIN96_MAX_SERIAL: Final = 2**38 - 1
# header byte -> (scheme, bits of the encoding)
_KNOWN: Final[dict[int, tuple[Scheme, int]]] = {
    0x30: ("sgtin", 96),
    0x36: ("sgtin", 198),
    0x31: ("sscc", 96),
    0x32: ("sgln", 96),
    0x39: ("sgln", 195),
}
_GS1_ES_SGTIN_SERIAL_AT: Final = len("(01)") + 14 + len("(21)")


class EpcError(ValueError):
    """An EPC that cannot be decoded or encoded; ``reason`` is a stable code.

    Decoding: 'invalid_hex', 'invalid_length', 'invalid_encoding'. Encoding also: 'invalid_gtin',
    'invalid_serial', 'invalid_company_prefix', 'invalid_filter'.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True, slots=True)
class Epc:
    hex: str  # upper-case, as read (including any zero padding)
    scheme: Scheme
    uri: str | None  # pure identity URI
    gtin: str | None  # SGTIN: GTIN-14
    serial: str | None  # SGTIN serial (numeric for SGTIN-96, alphanumeric for SGTIN-198)
    sscc: str | None  # 18 digits
    gln: str | None  # SGLN: the location's GLN (13 digits); the extension is in ``uri``


def decode_epc(hex_str: str) -> Epc:
    """Decode an EPC hex string; raise ``EpcError`` when it is not a well-formed EPC."""
    value = hex_str.strip().upper()
    if not value or not _HEX_RE.match(value):
        raise EpcError("invalid_hex", f"EPC {hex_str!r} is not a hex string")
    if len(value) % 4 or not _MIN_HEX <= len(value) <= _MAX_HEX:
        raise EpcError(
            "invalid_length",
            f"EPC {hex_str!r} has {len(value) * 4} bits; expected whole 16-bit words, 96 to 496 bits",
        )

    known = _KNOWN.get(int(value[:2], 16))
    if known is None:
        return Epc(hex=value, scheme="unknown", uri=_uri_if_any(value), gtin=None, serial=None, sscc=None, gln=None)

    scheme, bits = known
    total_bits = len(value) * 4
    padded_bits = -(-bits // 16) * 16
    if total_bits < padded_bits:
        raise EpcError("invalid_length", f"{scheme.upper()}-{bits} EPC {hex_str!r} is too short: {total_bits} bits")
    if int(value, 16) & ((1 << (total_bits - bits)) - 1):
        raise EpcError("invalid_length", f"{scheme.upper()}-{bits} EPC {hex_str!r} has non-zero bits past bit {bits}")

    try:
        tag: Any = hex_to_tag_encodable(value)
        uri: str = tag.epc_uri
        if scheme == "sgtin":
            element_string: str = tag.gs1_element_string()
            return Epc(
                hex=value,
                scheme=scheme,
                uri=uri,
                gtin=tag.gtin(),
                serial=element_string[_GS1_ES_SGTIN_SERIAL_AT:],
                sscc=None,
                gln=None,
            )
        if scheme == "sscc":
            return Epc(hex=value, scheme=scheme, uri=uri, gtin=None, serial=None, sscc=tag.gs1_key(), gln=None)
        return Epc(hex=value, scheme=scheme, uri=uri, gtin=None, serial=None, sscc=None, gln=tag.gs1_key())
    except (ConvertException, ValueError, KeyError, IndexError) as exc:
        raise EpcError("invalid_encoding", f"EPC {hex_str!r} is not a valid {scheme.upper()}-{bits}: {exc}") from exc


def _uri_if_any(value: str) -> str | None:
    try:
        uri: str = hex_to_tag_encodable(value).epc_uri
    except Exception:
        # Any failure only means we cannot name an identity we would not act on anyway.
        return None
    return uri


def encode_sgtin96(gtin: str, serial: int, company_prefix_len: int, *, filter_value: int = 0) -> str:
    """Encode a GTIN and numeric serial as SGTIN-96 hex (upper-case, 24 digits).

    ``company_prefix_len`` (6 to 12) is needed because an EPC, unlike a GTIN, encodes where the
    GS1 company prefix ends. ``filter_value`` is the 3-bit SGTIN filter (0 all others, 1 POS item,
    2 full case, ...).
    """
    try:
        gtin14 = normalise_gtin(gtin)
    except ScanCodeError as exc:
        raise EpcError("invalid_gtin", str(exc)) from exc
    if not 0 <= serial <= _SGTIN96_MAX_SERIAL:
        raise EpcError("invalid_serial", f"SGTIN-96 serial must be 0 to 2**38-1, got {serial}")
    if not 6 <= company_prefix_len <= 12:
        raise EpcError("invalid_company_prefix", f"company prefix length must be 6 to 12, got {company_prefix_len}")
    if not 0 <= filter_value <= 7:
        raise EpcError("invalid_filter", f"filter value must be 0 to 7, got {filter_value}")
    try:
        sgtin = SGTIN.from_gtin_plus_serial(gtin14, str(serial), company_prefix_len)
        # epcpy's hex() forwards keyword arguments only; positional ones are silently dropped.
        encoded: str = sgtin.hex(
            binary_coding_scheme=SGTIN.BinaryCodingScheme.SGTIN_96,
            filter_value=SGTINFilterValue(str(filter_value)),
        )
    except (ConvertException, ValueError) as exc:
        raise EpcError("invalid_encoding", f"cannot encode GTIN {gtin14} serial {serial}: {exc}") from exc
    return encoded.zfill(24)


__all__ = ["Epc", "EpcError", "Scheme", "decode_epc", "encode_sgtin96"]
