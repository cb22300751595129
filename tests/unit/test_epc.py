from __future__ import annotations

import pytest
from epcpy.epc_schemes.sgln import SGLN, SGLNFilterValue
from epcpy.epc_schemes.sgtin import SGTIN, SGTINFilterValue
from epcpy.epc_schemes.sscc import SSCC, SSCCFilterValue
from hypothesis import given
from hypothesis import strategies as st

from core.epc import Epc, EpcError, decode_epc, encode_sgtin96

VECTOR = "3074257BF7194E4000001A85"


def _check_digit(payload: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return str((10 - total % 10) % 10)


def test_sgtin96_reference_vector() -> None:
    assert decode_epc(VECTOR) == Epc(
        hex=VECTOR,
        scheme="sgtin",
        uri="urn:epc:id:sgtin:0614141.812345.6789",
        gtin="80614141123458",
        serial="6789",
        sscc=None,
        gln=None,
    )


def test_lower_case_hex_is_accepted_and_upper_cased() -> None:
    assert decode_epc(VECTOR.lower()).hex == VECTOR


def test_encode_reproduces_the_reference_vector() -> None:
    # The vector carries filter value 3 (header 0x30, then 0x74 = filter 011, partition 101).
    assert encode_sgtin96("80614141123458", 6789, 7, filter_value=3) == VECTOR
    assert decode_epc(encode_sgtin96("80614141123458", 6789, 7)).uri == "urn:epc:id:sgtin:0614141.812345.6789"


def test_sgtin198_alphanumeric_serial_round_trip() -> None:
    # Built with epcpy's own encoder; '/' must be %2F in the URI and plain in the GS1 serial.
    tag = SGTIN("urn:epc:id:sgtin:0614141.812345.AB%2FC-12")
    hex_198 = tag.hex(binary_coding_scheme=SGTIN.BinaryCodingScheme.SGTIN_198, filter_value=SGTINFilterValue.POS_ITEM)
    assert hex_198.startswith("36")
    assert len(hex_198) == 52  # 198 bits padded to whole 16-bit words
    epc = decode_epc(hex_198)
    assert epc.scheme == "sgtin"
    assert epc.uri == "urn:epc:id:sgtin:0614141.812345.AB%2FC-12"
    assert epc.gtin == "80614141123458"
    assert epc.serial == "AB/C-12"


def test_sscc96_round_trip() -> None:
    tag = SSCC.from_gs1_element_string("(00)106141411234567897", 7)
    hex_96 = tag.hex(binary_coding_scheme=SSCC.BinaryCodingScheme.SSCC_96, filter_value=SSCCFilterValue.UNIT_LOAD)
    assert hex_96.startswith("31")
    epc = decode_epc(hex_96)
    assert (epc.scheme, epc.sscc, epc.gtin, epc.serial) == ("sscc", "106141411234567897", None, None)
    assert epc.uri == "urn:epc:id:sscc:0614141.1123456789"


@pytest.mark.parametrize("coding", list(SGLN.BinaryCodingScheme))
def test_sgln_is_a_location(coding: SGLN.BinaryCodingScheme) -> None:
    tag = SGLN("urn:epc:id:sgln:0614141.12345.400")
    epc = decode_epc(tag.hex(binary_coding_scheme=coding, filter_value=SGLNFilterValue.ALL_OTHERS))
    assert (epc.scheme, epc.uri, epc.gln) == ("sgln", "urn:epc:id:sgln:0614141.12345.400", "0614141123452")
    assert (epc.gtin, epc.serial, epc.sscc) == (None, None, None)


@pytest.mark.parametrize(
    ("hex_str", "uri"),
    [
        ("E2806894000050010000000A", None),  # factory EPC of an unprogrammed tag
        ("000000000000000000000000", None),
        ("3574257BF7194E4000001A85", "urn:epc:id:gid:121788351.7443684.6789"),  # GID-96
        ("3474257BF7194E4000001A85", "urn:epc:id:giai:0614141.223295693316430469"),  # GIAI-96
    ],
)
def test_other_valid_hex_is_unknown(hex_str: str, uri: str | None) -> None:
    epc = decode_epc(hex_str)
    assert (epc.scheme, epc.uri, epc.gtin, epc.serial, epc.sscc, epc.gln) == ("unknown", uri, None, None, None, None)


def test_zero_padding_past_the_scheme_is_accepted() -> None:
    assert decode_epc(VECTOR + "0000").gtin == "80614141123458"


@pytest.mark.parametrize(
    ("hex_str", "reason"),
    [
        ("", "invalid_hex"),
        ("XYZ", "invalid_hex"),
        ("3074257BF7194E4000001A8G", "invalid_hex"),
        ("0x3074257BF7194E4000001A85", "invalid_hex"),
        (VECTOR[:-1], "invalid_length"),  # not whole 16-bit words
        (VECTOR[:-4], "invalid_length"),  # 80 bits
        ("E2806894", "invalid_length"),
        ("30" * 63, "invalid_length"),  # more than 496 bits
        (VECTOR + "FFFF", "invalid_length"),  # junk past the 96 bits epcpy would ignore
        ("3634257BF7194E60C25F0D6B1640", "invalid_length"),  # SGTIN-198 header, 112 bits
        ("30FF257BF7194E4000001A85", "invalid_encoding"),  # SGTIN partition 7 does not exist
        ("3174257BF7194E4000001A85", "invalid_encoding"),
    ],
)
def test_invalid(hex_str: str, reason: str) -> None:
    with pytest.raises(EpcError) as err:
        decode_epc(hex_str)
    assert err.value.reason == reason
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("gtin", "serial", "cpl", "reason"),
    [
        ("80614141123459", 1, 7, "invalid_gtin"),
        ("8061414112345", 1, 7, "invalid_gtin"),
        ("80614141123458", -1, 7, "invalid_serial"),
        ("80614141123458", 2**38, 7, "invalid_serial"),
        ("80614141123458", 1, 5, "invalid_company_prefix"),
        ("80614141123458", 1, 13, "invalid_company_prefix"),
    ],
)
def test_encode_rejects(gtin: str, serial: int, cpl: int, reason: str) -> None:
    with pytest.raises(EpcError) as err:
        encode_sgtin96(gtin, serial, cpl)
    assert err.value.reason == reason


def test_encode_accepts_short_gtins() -> None:
    epc = decode_epc(encode_sgtin96("5901234123457", 42, 7))
    assert (epc.gtin, epc.serial) == ("05901234123457", "42")


@st.composite
def _gtins(draw: st.DrawFn) -> str:
    payload = draw(st.text(alphabet="0123456789", min_size=13, max_size=13))
    return payload + _check_digit(payload)


@given(
    gtin=_gtins(),
    serial=st.integers(min_value=0, max_value=2**38 - 1),
    cpl=st.integers(min_value=6, max_value=12),
    filter_value=st.integers(min_value=0, max_value=7),
)
def test_decode_encode_round_trip(gtin: str, serial: int, cpl: int, filter_value: int) -> None:
    hex_str = encode_sgtin96(gtin, serial, cpl, filter_value=filter_value)
    assert len(hex_str) == 24
    epc = decode_epc(hex_str)
    assert (epc.scheme, epc.gtin, epc.serial, epc.hex) == ("sgtin", gtin, str(serial), hex_str)
    company_prefix = gtin[1 : 1 + cpl]
    assert epc.uri == f"urn:epc:id:sgtin:{company_prefix}.{gtin[0]}{gtin[1 + cpl : -1]}.{serial}"
