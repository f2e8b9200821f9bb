"""charset.guess/decode with their fast paths against the reference implementation.

The fast paths: a translate pass (short samples) or one memchr per control byte (long ones)
instead of a regex, a NUL test before the UTF-16 column counts, a high-byte prefilter before
the UTF-16 plausibility decoding, and (decode) one strict UTF-8 decoding of all the data that
also answers the UTF-8 test. Same codec as the reference on every input; decode's text is the
data decoded with that codec ("replace"), and its UTF-8 bytes, when given, are that text.
"""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.content import charset
from tests.monitor.content import charset_reference

CODECS = ["utf-8", "euc-jp", "cp932", "iso-2022-jp", "utf-16-le", "utf-16-be", "ascii", "latin-1"]
JA = "本文書は保護すべき情報を含む。取扱いには注意すること。ｶﾀｶﾅも少し。漢字かなカナ"
SAMPLES = st.text(alphabet=st.sampled_from(list(JA + "abc XYZ\r\n\t.,:0123\x1b\x00\x7f\u3000\uff01\U0001f600")),
                  max_size=300)


def check(data: bytes) -> None:
    expected = charset_reference.guess(data)
    assert charset.guess(data) == expected
    decoded = charset.decode(data)
    if expected is None:
        assert decoded is None
        return
    assert decoded is not None
    codec, text, utf8 = decoded
    assert codec == expected
    assert text == data.decode(codec, "replace")
    if utf8 is not None:
        assert utf8 == text.encode("utf-8")


SETTINGS = settings(max_examples=1500, deadline=None, derandomize=True)


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes(data):
    check(data)


@SETTINGS
@given(SAMPLES, st.sampled_from(CODECS), st.integers(0, 6))
def test_text_in_any_codec_cut_anywhere(text, codec, cut):
    data = text.encode(codec, "replace")
    check(data)
    check(data[: max(0, len(data) - cut)])
    check(data[1:])


@SETTINGS
@given(st.lists(st.tuples(SAMPLES, st.sampled_from(CODECS)), max_size=4), st.binary(max_size=20))
def test_mixtures_of_codecs_and_binary(parts, noise):
    data = b"".join(t.encode(c, "replace") for t, c in parts)
    check(data)
    check(noise + data)
    check(data + noise)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from([0x00, 0x30, 0x4E, 0x9F, 0xFF, 0xD8, 0xDC, 0x20, 0xA0, 0x41]), min_size=4,
                max_size=2100), st.binary(min_size=4, max_size=2100), st.booleans())
def test_utf16_plausibility_around_its_threshold(highs, lows, big_endian):
    """Units whose high bytes are mostly plausible, with surrogates: the prefilter's edge."""
    units = [bytes([h, lows[i % len(lows)]]) if big_endian else bytes([lows[i % len(lows)], h])
             for i, h in enumerate(highs)]
    data = b"".join(units)
    check(data)
    check(data + b"\x80")


def test_large_samples_and_data_beyond_the_sample():
    rng = random.Random(7)
    text = "".join(rng.choice(JA + "abc \n") for _ in range(60_000))
    for codec in ("utf-8", "euc-jp", "cp932", "utf-16-le"):
        data = text.encode(codec)
        check(data)
        check(data + b"\xff\xfe tail that is not UTF-8")
    ascii_then_utf8 = b"a" * (charset.SAMPLE + 10) + "情報".encode()
    check(ascii_then_utf8)
    assert charset.decode(ascii_then_utf8)[2] is None  # not ASCII past the sample: encoded anew
    assert charset.decode("情報".encode())[2] == "情報".encode()


# The control-byte test two ways (translate for short samples, memchr per byte value for long
# ones) against a regex over the same class, on both sides of the size where they switch.
CONTROL_CLASS = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
NEAR_SWITCH = st.integers(0, 2 * charset._TRANSLATE_MAX + 3)  # noqa: SLF001


@SETTINGS
@given(NEAR_SWITCH, st.sampled_from([None, *range(0x20), 0x7F, 0x80, 0xFF]), st.integers(0, 10**6), st.booleans())
def test_control_byte_test_equals_a_regex_at_every_sample_size(size, planted, where, japanese):
    filler = ("保護すべき情報 abc\r\n\t\x1b" if japanese else "plain text,\r\n\t\x1b").encode()
    data = (filler * (size // len(filler) + 1))[:size]
    if planted is not None and size:
        pos = where % size
        data = data[:pos] + bytes([planted]) + data[pos + 1 :]
    assert charset._has_control(data) == (CONTROL_CLASS.search(data) is not None)  # noqa: SLF001
    check(data)


@SETTINGS
@given(st.binary(min_size=charset._TRANSLATE_MAX - 8, max_size=3 * charset._TRANSLATE_MAX))  # noqa: SLF001
def test_random_bytes_past_the_translate_size(data):
    assert charset._has_control(data) == (CONTROL_CLASS.search(data) is not None)  # noqa: SLF001
    check(data)
