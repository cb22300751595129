from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.gs1 import ScanCode, ScanCodeError, gtin_check_digit_ok, interpret, normalise_gtin

GS = "\x1d"
GTIN = "09506000134352"


def _check_digit(payload: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return str((10 - total % 10) % 10)


def _bad(value: str) -> str:
    """The same code with its last digit (the check digit) changed."""
    return value[:-1] + str((int(value[-1]) + 1) % 10)


# --- the examples from DOMAIN.md -------------------------------------------------------------


def test_gs1_128_with_symbology_id_gtin_lot_expiry() -> None:
    code = "]C1" + "01" + GTIN + "10ABC123" + GS + "17261231"
    assert interpret(code) == ScanCode(
        gtin=GTIN, sscc=None, content_gtin=None, lot="ABC123", expiry=date(2026, 12, 31), serial=None, count=None
    )


def test_sscc() -> None:
    result = interpret("00106141411234567897")
    assert result.sscc == "106141411234567897"
    assert result.gtin is None


def test_plain_ean13_is_normalised_to_gtin14() -> None:
    assert interpret("5901234123457").gtin == "05901234123457"


# --- separators and symbology identifiers ------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "01" + GTIN + "10ABC123" + GS + "17261231",
        "01" + GTIN + "10ABC123|17261231",
        "]C1" + "01" + GTIN + "10ABC123|17261231",
        "]d2" + "01" + GTIN + "10ABC123" + GS + "17261231",
        "]Q3" + "01" + GTIN + "10ABC123" + GS + "17261231",
        "]e0" + "01" + GTIN + "10ABC123" + GS + "17261231",
        # element strings in another order: the separator ends the lot wherever it is
        "17261231" + "10ABC123" + GS + "01" + GTIN,
        # a leading FNC1 sent as GS, and the CR/LF suffix many scanners append
        "]C1" + GS + "01" + GTIN + "10ABC123" + GS + "17261231\r\n",
        # a separator after a fixed-length field is allowed
        "01" + GTIN + GS + "10ABC123" + GS + "17261231" + GS,
    ],
)
def test_same_content_whatever_the_framing(code: str) -> None:
    result = interpret(code)
    assert (result.gtin, result.lot, result.expiry) == (GTIN, "ABC123", date(2026, 12, 31))


def test_configured_separator_only() -> None:
    code = "01" + GTIN + "10ABC123;17261231"
    assert interpret(code, separators=(";",)).lot == "ABC123"
    # Without ';' as separator the lot swallows the rest: AI 10 allows up to 20 characters.
    assert interpret(code, separators=(GS,)).lot == "ABC123;17261231"


def test_pipe_is_not_a_separator_when_not_configured() -> None:
    with pytest.raises(ScanCodeError) as err:
        interpret("01" + GTIN + "|" + "10ABC", separators=(GS,))
    assert err.value.reason == "unparseable_code"


def test_separators_must_be_single_characters() -> None:
    with pytest.raises(ValueError, match="single characters"):
        interpret("01" + GTIN, separators=("||",))


@pytest.mark.parametrize(
    ("code", "gtin"),
    [
        ("]E05901234123457", "05901234123457"),  # EAN-13
        ("]E0036000291452", "00036000291452"),  # UPC-A sent as 13 digits under ]E0
        ("036000291452", "00036000291452"),  # UPC-A, no symbology identifier
        ("]E496385074", "00000096385074"),  # EAN-8
        ("96385074", "00000096385074"),  # EAN-8 bare: a GTIN, not AI 96
        ("]E3590123412345712", "05901234123457"),  # EAN-13 with a 2-digit add-on
        ("]I1" + GTIN, GTIN),  # ITF-14
        (GTIN, GTIN),  # bare GTIN-14
    ],
)
def test_plain_gtin_carriers(code: str, gtin: str) -> None:
    assert interpret(code) == ScanCode(
        gtin=gtin, sscc=None, content_gtin=None, lot=None, expiry=None, serial=None, count=None
    )


def test_gs1_digital_link_uri() -> None:
    result = interpret("]Q3https://id.gs1.org/01/" + GTIN + "/10/ABC123?17=261200")
    assert (result.gtin, result.lot, result.expiry) == (GTIN, "ABC123", date(2026, 12, 31))


# --- AIs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yymmdd", "expected"),
    [
        ("261200", date(2026, 12, 31)),
        ("260200", date(2026, 2, 28)),
        ("280200", date(2028, 2, 29)),  # leap year
        ("260400", date(2026, 4, 30)),
        ("260415", date(2026, 4, 15)),
    ],
)
def test_expiry_day_00_is_last_day_of_month(yymmdd: str, expected: date) -> None:
    assert interpret("01" + GTIN + "17" + yymmdd).expiry == expected


def test_impossible_expiry_date() -> None:
    with pytest.raises(ScanCodeError) as err:
        interpret("01" + GTIN + "17260231")
    assert err.value.reason == "invalid_date"


def test_serial_and_count() -> None:
    result = interpret("]C1" + "01" + GTIN + "21SN-0042/A" + GS + "3712")
    assert result.serial == "SN-0042/A"
    assert result.count == 12


def test_pallet_label_sscc_content_count_lot() -> None:
    code = "]C1" + "00106141411234567897" + "02" + GTIN + "37144" + GS + "10L77" + GS + "17270115"
    assert interpret(code) == ScanCode(
        gtin=None,
        sscc="106141411234567897",
        content_gtin=GTIN,
        lot="L77",
        expiry=date(2027, 1, 15),
        serial=None,
        count=144,
    )


def test_repeated_ai_with_same_value_is_fine_with_different_value_is_not() -> None:
    assert interpret("01" + GTIN + "01" + GTIN).gtin == GTIN
    with pytest.raises(ScanCodeError) as err:
        interpret("01" + GTIN + "01" + "05901234123457")
    assert err.value.reason == "conflicting_ai"


# --- rejections -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "01" + _bad(GTIN),
        "]C1" + "01" + _bad(GTIN) + "10ABC123",
        "00" + _bad("106141411234567897"),
        "]C1" + "00" + _bad("106141411234567897"),
        "00106141411234567897" + "02" + _bad(GTIN) + "3712",
        _bad("5901234123457"),
        "]E0" + _bad("5901234123457"),
        _bad("96385074"),
        _bad(GTIN),
        "https://id.gs1.org/01/" + _bad(GTIN),
    ],
)
def test_bad_check_digit_is_rejected_never_guessed(code: str) -> None:
    with pytest.raises(ScanCodeError) as err:
        interpret(code)
    assert err.value.reason == "bad_check_digit"
    assert "check digit" in str(err.value)


@pytest.mark.parametrize(
    "code",
    ["hello", "]C1hello", "]E0hello", "0109506000134352XX", "01" + GTIN + "17261340", "]!abc", "12345", "]"],
)
def test_neither_gs1_nor_gtin_is_unparseable(code: str) -> None:
    with pytest.raises(ScanCodeError) as err:
        interpret(code)
    assert err.value.reason == "unparseable_code"
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("code", ["", "   ", "\r\n", "]C1", GS])
def test_empty_code(code: str) -> None:
    with pytest.raises(ScanCodeError) as err:
        interpret(code)
    assert err.value.reason == "empty_code"


# --- normalise_gtin / gtin_check_digit_ok -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("96385074", "00000096385074"),
        ("036000291452", "00036000291452"),
        ("5901234123457", "05901234123457"),
        (GTIN, GTIN),
        ("80614141123458", "80614141123458"),
    ],
)
def test_normalise_gtin(value: str, expected: str) -> None:
    assert normalise_gtin(value) == expected
    assert gtin_check_digit_ok(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_bad("5901234123457"), "bad_check_digit"),
        (_bad(GTIN), "bad_check_digit"),
        ("590123412345", "bad_check_digit"),  # 12 digits: read as UPC-A, wrong check digit
        ("1234567", "invalid_gtin"),
        ("123456789012345", "invalid_gtin"),
        ("59012341234a7", "invalid_gtin"),
        ("٥٩٠١٢٣٤١٢٣٤٥٧", "invalid_gtin"),  # non-ASCII digits
        ("", "invalid_gtin"),
    ],
)
def test_normalise_gtin_rejects(value: str, reason: str) -> None:
    with pytest.raises(ScanCodeError) as err:
        normalise_gtin(value)
    assert err.value.reason == reason
    assert not gtin_check_digit_ok(value)


@given(
    payload=st.text(alphabet="0123456789", min_size=7, max_size=13).filter(lambda s: len(s) in (7, 11, 12, 13)),
    wrong=st.integers(min_value=1, max_value=9),
)
def test_any_valid_gtin_normalises_and_any_other_check_digit_fails(payload: str, wrong: int) -> None:
    good = payload + _check_digit(payload)
    assert normalise_gtin(good) == good.zfill(14)
    assert interpret(good).gtin == good.zfill(14)
    bad = payload + str((int(_check_digit(payload)) + wrong) % 10)
    with pytest.raises(ScanCodeError) as err:
        interpret(bad)
    assert err.value.reason == "bad_check_digit"


@given(
    lot=st.text(alphabet="ABCXYZ0123456789-./", min_size=1, max_size=20),
    serial=st.text(alphabet="ABCXYZ0123456789-", min_size=1, max_size=20),
    count=st.integers(min_value=1, max_value=99_999_999),  # 0 is invalid_count: see test_zero_count_is_rejected
    sep=st.sampled_from([GS, "|"]),
)
def test_variable_fields_round_trip(lot: str, serial: str, count: int, sep: str) -> None:
    code = "]C1" + "01" + GTIN + "10" + lot + sep + "21" + serial + sep + "37" + str(count)
    result = interpret(code)
    assert (result.gtin, result.lot, result.serial, result.count) == (GTIN, lot, serial, count)


# --- issue 11: UPC-E, HRI from keyboard-wedge apps, AI (37) = 0 -----------------------------------


@pytest.mark.parametrize(
    ("code", "gtin"),
    [
        ("]E001234565", "00012345000065"),  # UPC-E 0123456 + check 5 -> UPC-A 012345000065
        ("]E004252614", "00042100005264"),  # valid UPC-E, not a check-digit error
        ("]E496385074", "00000096385074"),  # EAN-8 stays EAN-8 under ]E4
    ],
)
def test_upc_e_under_e0_is_expanded(code: str, gtin: str) -> None:
    assert interpret(code).gtin == gtin


def test_upc_e_with_a_wrong_check_digit_is_rejected() -> None:
    with pytest.raises(ScanCodeError) as err:
        interpret("]E001234566")
    assert err.value.reason == "bad_check_digit"


@pytest.mark.parametrize("code", ["(01)09506000134352(10)L7(17)271231(37)12",
                                  "(01) 09506000134352 (10) L7 (17) 271231 (37) 12"])
def test_hri_with_parentheses_from_keyboard_wedge_apps(code: str) -> None:
    result = interpret(code)
    assert (result.gtin, result.lot, result.expiry, result.count) == ("09506000134352", "L7", date(2027, 12, 31), 12)


@pytest.mark.parametrize("code", ["]C1" + "01" + GTIN + "370", "(01)" + GTIN + "(37)0", "01" + GTIN + "3700"])
def test_zero_count_is_rejected(code: str) -> None:
    with pytest.raises(ScanCodeError) as err:
        interpret(code)
    assert err.value.reason == "invalid_count" and "at least 1" in err.value.message
