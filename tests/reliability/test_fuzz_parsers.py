"""Property tests (hypothesis) of the parsers that meet outside data.

- CSV ingestion: ``prodclass.data.validate.validate`` reads ``X_train_update.csv`` and
  ``Y_train_CVw08PX.csv`` (through ``layout.read_features`` / ``read_labels``); arbitrary bytes,
  real sample rows mutated byte by byte, and rows of adversarial field values either validate
  or raise ``DataValidationError`` with a sentence. The zip upload of ``/predict/batch/zip``
  (``_read_challenge_zip``) either reads or answers ``HTTPException(422)`` with a reason.
- Text cleaning: ``prodclass.data.text.clean_text`` / ``product_text`` (what every text model
  sees, in training and serving) take any object and any unicode (HTML, entities, control
  characters, huge strings) and return normalised text.
- Image decoding: ``prodclass.data.images.open_image`` (serving, training) and ``check_image``
  (validation) on random bytes and on real sample photos (JPEG, and re-encoded as PNG, GIF,
  BMP, TIFF, WebP) truncated, bit-flipped or with their header changed: an RGB image or
  ``ImageError`` (a reason for ``check_image``), nothing else; a decompression bomb (huge
  declared dimensions, tiny file) is refused at once.

Examples per property: ``EXAMPLES`` (200; ``FEW`` = 66 for the zip one, 10-20 for the huge
inputs); no example database, so the repository stays clean (a failure prints its
reproduction). ``FUZZ_EXAMPLES`` raises the budget for a deeper search.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tempfile
import time
import unicodedata
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pytest
from fastapi import HTTPException
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from prodclass.data.images import MAX_PIXELS, ImageError, check_image, open_image
from prodclass.data.layout import X_TRAIN, Y_TRAIN
from prodclass.data.taxonomy import CODES
from prodclass.data.text import clean_text, product_text
from prodclass.data.validate import DataValidationError, ValidatedData, validate
from prodclass.serving.api.routes.predict import _read_challenge_zip

# a deeper search on demand: FUZZ_EXAMPLES=3000 pytest tests/reliability/test_fuzz_parsers.py
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FEW = max(1, EXAMPLES // 3)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2000,  # ms per example: a slow parse is a finding too
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_FEW = settings(FUZZ, max_examples=FEW)
SAMPLE_ROWS = 25
pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of stalling the run


# ---- mutations ---------------------------------------------------------------------------

KINDS = ("truncate", "flip", "insert", "delete", "overwrite", "header")
mutations = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.floats(0, 1, exclude_max=True),
        st.binary(min_size=1, max_size=24),
    ),
    min_size=1,
    max_size=5,
)


def mutate(data: bytes, operations: list[tuple[str, float, bytes]]) -> bytes:
    """Apply byte-level damage: cut the tail, xor, insert, delete or overwrite bytes somewhere
    (``header``: overwrite within the first 64 bytes, where formats keep their sizes)."""
    out = bytearray(data)
    for kind, where, payload in operations:
        span = min(64, len(out)) if kind == "header" else len(out)
        i = int(where * span)
        if kind == "truncate":
            del out[i:]
        elif kind == "flip":
            for j, mask in enumerate(payload):
                if i + j < len(out):
                    out[i + j] ^= mask or 0xFF
        elif kind == "insert":
            out[i:i] = payload
        elif kind == "delete":
            del out[i : i + len(payload)]
        else:  # overwrite, header
            out[i : i + len(payload)] = payload
    return bytes(out)


# ---- CSV ingestion --------------------------------------------------------------------------


class Files(tuple):
    """Real file contents, shown briefly in hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} real files>"


class Photos(dict):
    def __repr__(self) -> str:
        return f"<real photos: {', '.join(self)}>"


@pytest.fixture(scope="module")
def real_csvs(sample: Path) -> tuple[bytes, bytes]:
    """The header and first rows of the real X_train and Y_train (same rows)."""
    x = pd.read_csv(sample / X_TRAIN, index_col=0, dtype=str, keep_default_na=False)
    y = pd.read_csv(sample / Y_TRAIN, index_col=0, dtype=str, keep_default_na=False)
    rows = x.index[:SAMPLE_ROWS]
    return Files((x.loc[rows].to_csv().encode(), y.loc[rows].to_csv().encode()))


def validate_bytes(x_csv: bytes, y_csv: bytes) -> ValidatedData | None:
    """Validate a folder holding these two files; None when validation refused it (the
    documented DataValidationError, whose message must say why)."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / X_TRAIN).write_bytes(x_csv)
        (Path(folder) / Y_TRAIN).write_bytes(y_csv)
        try:
            result = validate(Path(folder), check_images=False)
        except DataValidationError as exc:
            assert str(exc).strip(), "a DataValidationError must say why"
            return None
    report = result.report
    assert report.n_accepted + report.n_rejected == report.n_rows
    assert len(result.products) == report.n_accepted
    assert result.products.index.is_unique
    if len(result.products):  # an accepted product has a known label and something to read
        assert result.products["label"].isin(CODES).all()
        assert (result.products["has_text"] | result.products["has_image"]).all()
    return result


def test_real_csv_head_validates(real_csvs):
    """The base of the mutations below is a valid pair (so mutations start from real data)."""
    result = validate_bytes(*real_csvs)
    assert result is not None and result.report.n_rows == SAMPLE_ROWS
    assert result.report.n_accepted > 0


@FUZZ
@given(x_csv=st.binary(max_size=2000), y_csv=st.binary(max_size=500))
def test_arbitrary_bytes_as_csvs_validate_or_are_refused(x_csv, y_csv):
    validate_bytes(x_csv, y_csv)


@FUZZ
@given(x_ops=mutations, y_ops=mutations, which=st.sampled_from(["x", "y", "both"]))
def test_mutated_real_csvs_validate_or_are_refused(real_csvs, x_ops, y_ops, which):
    x_csv, y_csv = real_csvs
    if which in ("x", "both"):
        x_csv = mutate(x_csv, x_ops)
    if which in ("y", "both"):
        y_csv = mutate(y_csv, y_ops)
    validate_bytes(x_csv, y_csv)


# field values that tend to break number and id parsing
tricky = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e400", "-0", "2583.0", "2583.5", " 10"]),
    st.sampled_from([str(c) for c in CODES]),
    st.integers().map(str),
    st.floats().map(str),
)
row_ids = st.one_of(st.integers(0, 50).map(str), st.text(max_size=8))


@FUZZ
@given(
    rows=st.lists(
        st.tuples(row_ids, tricky, tricky, tricky, tricky, tricky), min_size=1, max_size=12
    ),
    label_ids=st.booleans(),
)
def test_adversarial_field_values_validate_or_are_refused(rows, label_ids):
    """Well-formed CSVs whose ids, texts and labels are anything (quotes, separators, inf,
    huge numbers, duplicates); ``label_ids``: the labels file has the same row ids."""
    x = pd.DataFrame(
        [r[1:5] for r in rows],
        index=[r[0] for r in rows],
        columns=["designation", "description", "productid", "imageid"],
    )
    y_index = x.index if label_ids else [f"{i}" for i in range(len(rows))]
    y = pd.DataFrame({"prdtypecode": [r[5] for r in rows]}, index=y_index)
    validate_bytes(x.to_csv().encode(), y.to_csv().encode())


def test_infinite_and_huge_labels_are_reported_not_raised():
    """Regression (found by the test above): "inf" made ``int(code)`` raise OverflowError and
    1e20 (or any integer beyond int64) made the label cast raise TypeError."""
    x = pd.DataFrame(
        {"designation": ["a", "b", "c", "d"], "description": "", "imageid": ["1", "2", "3", "4"]}
        | {"productid": ["5", "6", "7", "8"]},
        index=["1", "2", "3", "4"],
    )
    y = pd.DataFrame({"prdtypecode": ["inf", "1e20", "18446744073709551615", "2583"]}, x.index)
    result = validate_bytes(x.to_csv().encode(), y.to_csv().encode())
    assert result is not None
    codes = {i.row_id: i.code for i in result.report.issues if i.code != "image_missing"}
    assert codes == {"1": "bad_label", "2": "unknown_label", "3": "unknown_label"}
    assert result.products["label"].tolist() == [2583]


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def read_zip_or_refuse(data: bytes) -> None:
    try:
        rows, photos = _read_challenge_zip(data, max_photo_bytes=64 * 1024)
    except HTTPException as exc:
        assert exc.status_code == 422 and str(exc.detail).strip()
        return
    assert {"designation", "description", "productid", "imageid"} <= set(rows.columns)
    assert all(len(p) <= 64 * 1024 for p in photos.values())


@FUZZ_FEW
@given(ops=mutations, csv_name=st.sampled_from(["X_test_update.csv", "data/X.CSV", "rows.csv"]))
def test_zip_upload_reads_or_is_refused(real_csvs, real_photos, ops, csv_name):
    """The CSV inside the zip mutated, and the (deflated) zip itself mutated."""
    x_csv, photo = real_csvs[0], real_photos["jpeg0"]
    read_zip_or_refuse(_zip({csv_name: mutate(x_csv, ops), "images/image_1_product_2.jpg": photo}))
    read_zip_or_refuse(mutate(_zip({"images/a.jpg": photo, csv_name: x_csv}), ops))


def damaged_zips(x_csv: bytes, photo: bytes) -> dict[str, bytes]:
    """Zips whose members cannot be read, each in its own way."""
    good = _zip({"X_test_update.csv": x_csv, "images/image_1_product_2.jpg": photo})
    local_headers = [m.start() for m in re.finditer(b"PK\x03\x04", good)]
    central = [m.start() for m in re.finditer(b"PK\x01\x02", good)]

    def patched(offsets: list[int], field: int, value: bytes) -> bytes:
        out = bytearray(good)
        for offset in offsets:
            out[offset + field : offset + field + len(value)] = value
        return bytes(out)

    data_start = local_headers[0] + 30 + len("X_test_update.csv")
    corrupt_data = bytearray(good)
    corrupt_data[data_start + 10 : data_start + 30] = b"\xff" * 20
    corrupt_photo = bytearray(good)
    photo_start = local_headers[1] + 30 + len("images/image_1_product_2.jpg")
    corrupt_photo[photo_start + 50 : photo_start + 90] = b"\x00" * 40
    return {
        "bad CRC": patched(central[:1], 16, b"\x00\x00\x00\x00"),
        "bad local header": patched(local_headers[:1], 0, b"XXXX"),
        "corrupt deflate data (CSV)": bytes(corrupt_data),
        "corrupt deflate data (photo)": bytes(corrupt_photo),
        "unknown compression method": patched(central + local_headers, 10, b"\x63\x00"),
        "encrypted": patched(central + local_headers, 8, b"\x01\x00"),
    }


def test_damaged_zip_members_are_refused_with_422(real_csvs, real_photos):
    """Regression (found by the property above): a zip member with a bad CRC or a bad header
    escaped as zipfile.BadZipFile (a 500 from /predict/batch/zip); corrupt deflate data,
    encryption and unknown compression methods raised zlib.error / RuntimeError."""
    for why, data in damaged_zips(real_csvs[0], real_photos["jpeg0"]).items():
        with pytest.raises(HTTPException) as refused:
            _read_challenge_zip(data, max_photo_bytes=1024 * 1024)
        assert refused.value.status_code == 422, why
        assert "cannot be read from the zip" in refused.value.detail, (why, refused.value.detail)


# ---- text cleaning ------------------------------------------------------------------------

# text that looks like merchant HTML: tags, entities (sometimes escaped twice), odd spaces
html_bits = st.sampled_from(
    [
        "<p>",
        "</p>",
        "<br />",
        '<span style="x">',
        "<li>",
        "&eacute;",
        "&amp;eacute;",
        "&#39;",
        "&quot;",
        "&nbsp;",
        "&#x1F600;",
        "&",
        "<",
        ">",
        "\u00a0",
        "\t",
        "\r\n",
        "\x00",
        "\x1b[31m",
        "\u200b",
        "e\u0301",
        "\ufeff",
    ]
)
texts = st.one_of(
    st.text(),
    st.lists(st.one_of(html_bits, st.text(max_size=10)), max_size=30).map("".join),
    st.text(alphabet=st.characters(codec="utf-8")),  # includes surrogate-free astral planes
)
WHITESPACE = re.compile(r"\s")


def check_clean(out: object) -> None:
    assert isinstance(out, str)
    assert out == out.strip()
    assert "  " not in out and "\u00a0" not in out
    assert all(c == " " for c in WHITESPACE.findall(out))  # every space is one plain space


@FUZZ
@given(text=texts, lowercase=st.booleans())
@example(text="caf&amp;eacute; <b>cr&egrave;me</b>", lowercase=True)
def test_clean_text_returns_normalised_text(text, lowercase):
    out = clean_text(text, lowercase)
    check_clean(out)
    if lowercase:
        assert out == out.lower()
    else:
        assert out == unicodedata.normalize("NFC", out)


@FUZZ
@given(text=texts.map(lambda t: t.replace("&", " ")), lowercase=st.booleans())
def test_clean_text_is_idempotent(text, lowercase):
    """Cleaning cleaned text changes nothing: training and serving may clean twice without
    disagreeing. (Entities are unescaped at most twice by design, "&amp;amp;" is data; so the
    property is stated on text whose entities are already unescaped.)"""
    once = clean_text(text, lowercase)
    assert clean_text(once, lowercase) == once


@FUZZ
@given(
    words=st.lists(st.text(st.characters(exclude_characters="<>&"), max_size=12), max_size=8),
    tag=st.sampled_from(["p", "b", "li", 'span class="a"', "br /", "div id='x'"]),
)
def test_tags_around_text_change_nothing_but_spacing(words, tag):
    plain = " ".join(words)
    closing = tag.split()[0].rstrip("/")
    marked = f"<{tag}>" + f"</{closing}><{tag}>".join(words) + f"</{closing}>"
    assert clean_text(marked) == clean_text(plain)


@FUZZ
@given(
    value=st.one_of(
        st.none(), st.floats(), st.integers(), st.binary(max_size=10), st.lists(st.text())
    )
)
def test_non_text_values_clean_to_empty(value):
    assert clean_text(value) == ""
    assert product_text(value, value) == ""


@FUZZ
@given(designation=st.one_of(texts, st.none(), st.floats()), description=texts)
def test_product_text_joins_the_cleaned_fields(designation, description):
    out = product_text(designation, description)
    check_clean(out)
    parts = [clean_text(designation), clean_text(description)]
    assert out == " ".join(p for p in parts if p)


@pytest.mark.timeout(30)
@settings(FUZZ, max_examples=10)
@given(unit=texts.filter(bool), repeat=st.integers(10_000, 200_000))
def test_huge_text_is_cleaned_in_linear_time(unit, repeat):
    """A product description of megabytes (the API accepts 100 000 characters per field; a
    CSV has no limit) is cleaned without catastrophic regex backtracking."""
    huge = (unit * repeat)[:2_000_000]
    start = time.perf_counter()
    check_clean(clean_text(huge))
    assert time.perf_counter() - start < 5


def test_unclosed_tag_storm_is_cleaned_quickly():
    start = time.perf_counter()
    out = clean_text("<" * 200_000 + "a")
    assert time.perf_counter() - start < 5
    check_clean(out)


# ---- image decoding -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_photos(sample: Path) -> dict[str, bytes]:
    """Two real sample photos as they are (JPEG), and one re-encoded in the other formats a
    client may send (shrunk: the decoders, not the pixels, are under test)."""
    jpegs = sorted((sample / "images/image_train").glob("*.jpg"))[:2]
    photos = Photos({f"jpeg{i}": path.read_bytes() for i, path in enumerate(jpegs)})
    with Image.open(jpegs[0]) as image:
        small = image.convert("RGB").resize((48, 48))
    for fmt, options in (
        ("PNG", {}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {"compression": "tiff_deflate"}),
        ("WEBP", {"quality": 80}),
        ("JPEG", {"progressive": True, "quality": 70}),
    ):
        buffer = io.BytesIO()
        small.save(buffer, fmt, **options)
        photos[fmt.lower() if fmt != "JPEG" else "jpeg-progressive"] = buffer.getvalue()
    return photos


def decode_or_refuse(data: bytes) -> None:
    try:
        image = open_image(data)
    except ImageError as exc:
        assert str(exc).strip()
    else:
        assert image.mode == "RGB" and image.width * image.height <= MAX_PIXELS
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.jpg"
        path.write_bytes(data)
        problem = check_image(path)
    assert problem is None or (isinstance(problem, str) and problem.strip())


def test_real_photos_decode(real_photos):
    for data in real_photos.values():
        assert open_image(data).mode == "RGB"


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_decode_or_are_refused(data):
    decode_or_refuse(data)


@FUZZ
@given(
    prefix=st.sampled_from(
        [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"RIFF", b"\x00\x00"]
    ),
    rest=st.binary(max_size=2048),
)
def test_bytes_with_a_format_signature_decode_or_are_refused(prefix, rest):
    """Random bodies behind each format's magic bytes reach each decoder's parser."""
    decode_or_refuse(prefix + rest)


@FUZZ
@given(which=st.sampled_from(["jpeg0", "jpeg1", "jpeg-progressive"]), ops=mutations)
def test_mutated_real_jpegs_decode_or_are_refused(real_photos, which, ops):
    decode_or_refuse(mutate(real_photos[which], ops))


@FUZZ
@given(which=st.sampled_from(["png", "gif", "bmp", "tiff", "webp"]), ops=mutations)
def test_mutated_real_photos_in_other_formats_decode_or_are_refused(real_photos, which, ops):
    decode_or_refuse(mutate(real_photos[which], ops))


def _png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def _jpeg_declaring(real_jpeg: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0/SOF2) claims other dimensions."""
    out = bytearray(real_jpeg)
    i = 2
    while i < len(out) - 9:
        assert out[i] == 0xFF
        marker, length = out[i + 1], struct.unpack(">H", out[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            out[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        i += 2 + length
    raise AssertionError("no frame header in the sample JPEG")


@pytest.mark.timeout(30)
@settings(FUZZ, max_examples=20)
@given(
    width=st.integers(6_400, 2**31 - 1),  # 6400 x 6400 is over MAX_PIXELS already
    height=st.integers(6_400, 2**31 - 1),
    kind=st.sampled_from(["png", "jpeg"]),
)
@example(width=100_000, height=100_000, kind="png")
@example(width=65_535, height=65_535, kind="jpeg")
def test_decompression_bombs_are_refused_quickly(real_photos, width, height, kind):
    if kind == "jpeg":
        width, height = min(width, 65_535), min(height, 65_535)
    data = (
        _png(width, height)
        if kind == "png"
        else _jpeg_declaring(real_photos["jpeg0"], width, height)
    )
    assert len(data) < 100_000
    start = time.perf_counter()
    with pytest.raises(ImageError, match="too large"):
        open_image(data)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bomb.jpg"
        path.write_bytes(data)
        assert "too large" in (check_image(path) or "")
    assert time.perf_counter() - start < 1.0
