"""Whole-catalogue scoring: every product of a challenge-layout CSV through the one predictor,
into a CSV or Parquet file, in bounded memory and resumable.

Why this shape: the full catalogue is 84,916 training and 13,812 test products, hours of CPU
for a model that reads photos. The CSV is read a chunk of rows at a time and each chunk's
answers are written at once to a part file of a work folder beside the output
(``<out>.partial/part-000012.parquet``, written atomically), so neither the products, their
photos nor the answers are ever all in memory, and a run stopped anywhere (Ctrl-C, a kill, a
crash) loses at most the chunk in progress: the same command finds the parts done and goes on
from the first missing one. When every part exists they are streamed into the output in the
CSV's order and the work folder is removed, so the output holds each product exactly once.

The work folder's ``manifest.json`` records what the run scores with (the CSV's hash, the
model and its registered version, the options): a re-run that would mix answers of another
model or another file is refused with the reason. ``shard`` restricts a run to the products
whose photo file name hashes to one shard (``pipelines/photo_shards.py``'s rule), so Dagster
spreads a catalogue over machines; ``merge_shards`` joins the shards' files in CSV order.

A product the predictor refuses (no text and no readable photo) gets a row with the reason
in ``error``; a product whose photo is refused but that has text is scored on its text, the
photo's problem in ``warning``. Neither stops the run.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prodclass.data.layout import FEATURE_COLUMNS, ChallengeLayout, image_name
from prodclass.files import atomic_write, spreadsheet_safe_csv
from prodclass.serving.predictor import InvalidProductError, Prediction, Predictor, ProductInput

PARTS = ("train", "test")
FORMATS = {".csv": "csv", ".parquet": "parquet"}
CHUNK_SIZE = 256  # products per chunk: a chunk's photos and answers are what memory holds
MANIFEST = "manifest.json"
POSITION = "position"  # the product's row number in the CSV: the order shards are merged in
SUBMISSION_LABEL = "prdtypecode"
META_KEY = b"prodclass.catalogue_scoring"  # the run's manifest, in a Parquet file's metadata


class ScoringConflictError(ValueError):
    """The output or its work folder belongs to another run (another model, file or option);
    the message says which and what to do."""


@dataclass(frozen=True)
class Source:
    """The products to score: one part (``train`` or ``test``) of a challenge-layout folder;
    a product's photo is ``images/image_<part>/image_<imageid>_product_<productid>.jpg``."""

    data_dir: Path
    part: str = "test"

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {', '.join(PARTS)}, not {self.part!r}")

    @property
    def csv(self) -> Path:
        layout = ChallengeLayout(self.data_dir)
        return layout.x_train if self.part == "train" else layout.x_test

    @property
    def photos(self) -> Path:
        return ChallengeLayout(self.data_dir).image_dir(self.part)

    def check(self) -> None:
        """FileNotFoundError or ValueError, in one sentence, for a CSV that cannot be scored."""
        if not self.csv.is_file():
            raise FileNotFoundError(f"no {self.csv.name} in {self.data_dir} (the {self.part} part)")
        header = _read(self.csv, 1)
        missing = [c for c in FEATURE_COLUMNS if c not in next(header, pd.DataFrame()).columns]
        if missing:
            raise ValueError(f"{self.csv} lacks the columns {', '.join(missing)}")

    def chunks(self, size: int) -> Iterator[pd.DataFrame]:
        """The CSV ``size`` rows at a time: index the row id, every field a string, missing
        text empty, and ``position`` the row's number in the file."""
        start = 0
        for chunk in _read(self.csv, size):
            chunk.index = chunk.index.astype(str)
            chunk[POSITION] = range(start, start + len(chunk))
            start += len(chunk)
            yield chunk

    def photo(self, productid: str, imageid: str) -> Path | None:
        """The product's photo file, None when the ids name none (or are not the challenge's
        numbers, so that no id reaches outside the photo folder)."""
        if not (productid.isdigit() and imageid.isdigit()):
            return None
        return self.photos / image_name(imageid, productid)


def _read(csv: Path, size: int) -> Iterator[pd.DataFrame]:
    """pandas' chunked reader; a file holding a NUL goes through the Python engine, which
    keeps the character (the C engine would end the field there, see ``data/layout.py``)."""
    engine = "python" if _holds_nul(csv) else "c"
    try:
        yield from pd.read_csv(
            csv, index_col=0, dtype=str, keep_default_na=False, chunksize=size, engine=engine
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{csv} is not a readable CSV: {exc}") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{csv} is empty") from None


def _holds_nul(path: Path) -> bool:
    with path.open("rb") as f:
        return any(b"\x00" in block for block in iter(lambda: f.read(1 << 20), b""))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_filter(shard: tuple[int, int] | None) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Keep the rows of one shard: ``shard_of`` on the photo's file name (the ids make it
    whether or not the photo exists), so a product and its photo land on the same shard."""
    if shard is None:
        return lambda chunk: chunk
    from prodclass.pipelines.photo_shards import shard_of

    index, count = shard

    def keep(chunk: pd.DataFrame) -> pd.DataFrame:
        names = [image_name(i, p) for i, p in zip(chunk["imageid"], chunk["productid"])]
        return chunk[[shard_of(name, count) == index for name in names]]

    return keep


def count_products(source: Source, shard: tuple[int, int] | None = None) -> int:
    """How many products a run scores (the progress bar's total): one streamed pass."""
    keep = shard_filter(shard)
    return sum(len(keep(chunk)) for chunk in source.chunks(20_000))


# ---- scoring one chunk ----------------------------------------------------------------------


def columns(top_k: int) -> list[str]:
    """The output's columns: the ids, what the model went on, the top-k codes with their
    French names (as the catalogue writes them) and probabilities, then the problems."""
    ranked = [
        f"{kind}_{i}" for i in range(1, top_k + 1) for kind in ("code", "name", "probability")
    ]
    return ["row_id", "productid", "imageid", "inputs", *ranked, "warning", "error"]


def schema(top_k: int) -> pa.Schema:
    types = {"code": pa.int32(), "probability": pa.float64()}
    fields = [pa.field(POSITION, pa.int64())]
    for name in columns(top_k):
        fields.append(pa.field(name, types.get(name.split("_")[0], pa.string())))
    return pa.schema(fields)


def _product(source: Source, row: pd.Series) -> tuple[ProductInput, str]:
    """The product as the predictor takes it, and why its photo was not read ("" when it was
    or when there is none on disk: many catalogue products have no photo)."""
    path = source.photo(row["productid"], row["imageid"])
    photo, warning = None, ""
    if path is None:
        warning = "productid and imageid are not numbers: no photo looked up"
    elif path.is_file():
        try:
            photo = path.read_bytes()
        except OSError as exc:
            warning = f"photo {path.name} cannot be read ({exc.strerror})"
    product = ProductInput(row["designation"], row["description"], photo, row["productid"] or None)
    return product, warning


def score_chunk(
    predictor: Predictor, source: Source, chunk: pd.DataFrame, top_k: int
) -> pd.DataFrame:
    """One chunk's rows of the output. A product with nothing to go on is refused at once;
    the others go to the predictor in one call, and only when it refuses one (a bad photo) is
    each checked alone, so that the refused ones get their reason and one with text and a bad
    photo is scored on its text."""
    top_k = min(top_k, len(predictor.model.classes_))
    products, warnings, errors = [], [], []
    for _, row in chunk.iterrows():
        product, warning = _product(source, row)
        products.append(product)
        warnings.append(warning)
        errors.append("" if product.image else _refusal(predictor, product))
    scored = [i for i, error in enumerate(errors) if not error]
    try:
        found = predictor.predict([products[i] for i in scored], top_k=top_k)
    except InvalidProductError:
        for i in scored:
            if reason := _refusal(predictor, products[i]):
                products[i] = replace(products[i], image=None)
                errors[i] = "" if product_has_text(predictor, products[i]) else reason
                warnings[i] = f"{reason}: scored on the text alone" if not errors[i] else ""
        scored = [i for i, error in enumerate(errors) if not error]
        found = predictor.predict([products[i] for i in scored], top_k=top_k)
    answers: list[Prediction | None] = [None] * len(products)
    for i, answer in zip(scored, found):
        answers[i] = answer
    rows = []
    for (row_id, row), answer, warning, error in zip(chunk.iterrows(), answers, warnings, errors):
        record: dict[str, Any] = {
            POSITION: int(row[POSITION]),
            "row_id": row_id,
            "productid": row["productid"],
            "imageid": row["imageid"],
            "inputs": answer.inputs if answer else "",
            "warning": warning,
            "error": error,
        }
        for rank in range(1, top_k + 1):
            score = answer.top[rank - 1] if answer else None
            record[f"code_{rank}"] = score.prdtypecode if score else None
            record[f"name_{rank}"] = score.name_fr if score else ""
            record[f"probability_{rank}"] = score.probability if score else None
        rows.append(record)
    return pd.DataFrame(rows, columns=schema(top_k).names)


def _refusal(predictor: Predictor, product: ProductInput) -> str:
    """Why the predictor refuses the product ("" when it takes it), without the position."""
    try:
        predictor.check(product)
    except InvalidProductError as exc:
        return str(exc).removeprefix("product 0: ")
    return ""


def product_has_text(predictor: Predictor, product: ProductInput) -> bool:
    """Whether the product has words to classify once its photo is left out."""
    try:
        predictor.check(ProductInput(product.designation, product.description))
    except InvalidProductError:
        return False
    return True


# ---- the resumable run ----------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What a run scores with; a work folder is only ever continued by the same."""

    csv: str
    csv_sha256: str
    part: str
    model_uri: str
    model_version: str | None
    top_k: int
    chunk_size: int
    shard: list[int] | None

    def differences(self, other: Manifest) -> list[str]:
        """What differs, the CSV's path aside (the same file may be reached another way)."""
        mine, theirs = asdict(self), asdict(other)
        return [
            f"{k} {theirs[k]!r} (this run: {mine[k]!r})"
            for k in mine
            if k != "csv" and mine[k] != theirs[k]
        ]


@dataclass(frozen=True)
class ScoringResult:
    out: Path
    products: int  # rows written
    refused: int  # rows with an error
    resumed_chunks: int  # chunks found done by an earlier run
    model_uri: str
    model_version: str | None


def output_format(out: Path) -> str:
    """``csv`` or ``parquet`` from the file's extension; ValueError for any other."""
    try:
        return FORMATS[out.suffix.lower()]
    except KeyError:
        raise ValueError(f"{out}: the output must end in .csv or .parquet") from None


def check_output(out: Path, submission: bool = False, shard: tuple[int, int] | None = None) -> str:
    """The output's format (``csv`` or ``parquet``); ValueError, in one sentence, for a
    combination that cannot be written."""
    fmt = output_format(out)
    if submission and fmt != "csv":
        raise ValueError(f"{out}: the challenge's submission format is a CSV")
    if shard is not None and (fmt != "parquet" or submission):
        raise ValueError(f"{out}: a shard's file is Parquet (merge_shards writes the others)")
    return fmt


def work_folder(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def score_catalogue(
    predictor: Predictor,
    source: Source,
    out: Path,
    *,
    top_k: int = 3,
    chunk_size: int = CHUNK_SIZE,
    submission: bool = False,
    shard: tuple[int, int] | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> ScoringResult:
    """Score every product of ``source`` (of one shard) into ``out``, continuing the work
    folder a stopped run left; ``advance(n)`` is told of each chunk's products, done now or
    earlier. ``submission`` writes the challenge's layout (the row id, ``prdtypecode``) in a
    CSV. ScoringConflictError when ``out`` or its work folder belongs to another run."""
    if top_k < 1 or chunk_size < 1:
        raise ValueError("top_k and chunk_size must be at least 1")
    fmt = check_output(out, submission, shard)
    source.check()
    work = work_folder(out)
    if out.exists() and not work.exists():
        raise ScoringConflictError(
            f"{out} exists and is complete: remove it or choose another --out to score again"
        )
    k = min(top_k, len(predictor.model.classes_))
    manifest = Manifest(
        str(source.csv.resolve()), file_sha256(source.csv), source.part, predictor.model_uri,
        predictor.model_version, k, chunk_size, list(shard) if shard else None,
    )  # fmt: skip
    done = _open_work(work, manifest)
    keep = shard_filter(shard)
    for number, chunk in enumerate(source.chunks(chunk_size)):
        rows = keep(chunk)
        if number not in done:
            part = score_chunk(predictor, source, rows, k)
            table = pa.Table.from_pandas(part, schema=schema(k), preserve_index=False)
            atomic_write(_part(work, number), lambda f, t=table: pq.write_table(t, f))
        advance(len(rows))
    products, refused = _merge(sorted(work.glob("part-*.parquet")), out, fmt, submission, manifest)
    shutil.rmtree(work)
    return ScoringResult(out, products, refused, len(done), manifest.model_uri,
                         manifest.model_version)  # fmt: skip


def _part(work: Path, number: int) -> Path:
    return work / f"part-{number:06d}.parquet"


def _open_work(work: Path, manifest: Manifest) -> set[int]:
    """The chunks an earlier run finished (their part files read back whole), after checking
    it scored with the same manifest; a new work folder otherwise."""
    path = work / MANIFEST
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(json.dumps(asdict(manifest), indent=2).encode()))
        return set()
    try:
        earlier = Manifest(**json.loads(path.read_text()))
    except (ValueError, TypeError):  # not JSON, or not this command's keys
        raise ScoringConflictError(
            f"{path} is not a manifest of `prodclass predict`: remove {work} to start over"
        ) from None
    if differences := manifest.differences(earlier):
        raise ScoringConflictError(
            f"{work} holds a run started with {'; '.join(differences)}: run it again as it "
            f"was started to finish it, or remove {work} to start over"
        )
    for leftover in work.glob(".*.tmp"):  # a part being written when the run was killed
        leftover.unlink()
    done = set()
    for part in work.glob("part-*.parquet"):
        try:
            pq.read_metadata(part)
        except (pa.ArrowException, OSError):
            part.unlink()  # cut short by a crash of the machine: scored again
            continue
        done.add(int(part.stem.removeprefix("part-")))
    return done


def _merge(
    parts: list[Path], out: Path, fmt: str, submission: bool, manifest: Manifest
) -> tuple[int, int]:
    """Stream the part files, in order, into ``out`` (atomically); (rows, refused rows)."""
    tables = (pq.read_table(part) for part in parts)
    return _write(tables, out, fmt, submission, manifest)


def _write(
    tables: Iterator[pa.Table], out: Path, fmt: str, submission: bool, manifest: Manifest
) -> tuple[int, int]:
    counts = [0, 0]

    def write(f: Any) -> None:
        writer = None
        first = True
        for table in tables:
            # a shard's file keeps each row's position: the order shards are merged in
            frame = table if manifest.shard else table.drop_columns([POSITION])
            counts[0] += frame.num_rows
            counts[1] += sum(bool(e) for e in frame.column("error").to_pylist())
            if fmt == "parquet":
                if writer is None:
                    metadata = {META_KEY: json.dumps(asdict(manifest)).encode()}
                    writer = pq.ParquetWriter(f, frame.schema.with_metadata(metadata))
                writer.write_table(frame)
                continue
            rows = frame.to_pandas()
            if submission:
                rows = pd.DataFrame(
                    {SUBMISSION_LABEL: rows["code_1"].astype("Int64").array},
                    index=pd.Index(rows["row_id"], name=""),
                )
                text = rows.to_csv(header=first)
            else:
                for column in rows.columns:
                    if column.startswith("code_"):
                        rows[column] = rows[column].astype("Int64")
                text = spreadsheet_safe_csv(rows.set_index("row_id")).decode()
                if not first:
                    text = text.split("\n", 1)[1]
            f.write(text.encode())
            first = False
        if writer is not None:
            writer.close()
        elif fmt == "parquet":  # nothing to score: an empty file with the columns
            empty = schema(manifest.top_k).empty_table()
            empty = empty if manifest.shard else empty.drop_columns([POSITION])
            metadata = {META_KEY: json.dumps(asdict(manifest)).encode()}
            pq.write_table(empty.replace_schema_metadata(metadata), f)
        elif first:  # an empty CSV still has its header
            header = [("", SUBMISSION_LABEL)] if submission else [columns(manifest.top_k)]
            f.write((",".join(header[0]) + "\n").encode())

    atomic_write(out, write)
    return counts[0], counts[1]


# ---- shards ---------------------------------------------------------------------------------


def merge_shards(
    shard_files: list[Path], out: Path, *, submission: bool = False, chunk_rows: int = 4096
) -> tuple[int, int]:
    """Join the shards' Parquet files (written by ``score_catalogue`` with ``shard``) into
    ``out`` in the CSV's order, streaming (a k-way merge on the row's position). ValueError
    when a shard is missing or the shards scored another file or model; (rows, refused)."""
    fmt = check_output(out, submission)
    manifests = {path: shard_manifest(path) for path in shard_files}
    first = next(iter(manifests.values()), None)
    if first is None:
        raise ValueError("no shard file to merge")
    count = first.shard[1] if first.shard else 1
    found = sorted(m.shard[0] for m in manifests.values() if m.shard)
    if found != list(range(count)):
        missing = sorted(set(range(count)) - set(found))
        raise ValueError(f"shards {missing} of {count} are missing; score them first")
    same = ("csv_sha256", "model_uri", "model_version", "top_k")
    for path, manifest in manifests.items():
        if other := [k for k in same if getattr(manifest, k) != getattr(first, k)]:
            raise ValueError(f"{path} differs from the other shards in {', '.join(other)}")
    whole = Manifest(**(asdict(first) | {"shard": None}))
    position_schema = schema(first.top_k)

    def rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            for record in batch.to_pylist():
                yield record[POSITION], record

    merged = heapq.merge(*(rows(p) for p in shard_files), key=lambda item: item[0])

    def tables() -> Iterator[pa.Table]:
        batch: list[dict[str, Any]] = []
        for _, record in merged:
            batch.append(record)
            if len(batch) == chunk_rows:
                yield pa.Table.from_pylist(batch, schema=position_schema)
                batch = []
        if batch:
            yield pa.Table.from_pylist(batch, schema=position_schema)

    return _write(tables(), out, fmt, submission, whole)


def shard_manifest(path: Path) -> Manifest:
    """The manifest a shard's Parquet file carries; ValueError for a file that is not one."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path} is not a readable Parquet file: {exc}") from None
    if META_KEY not in metadata:
        raise ValueError(f"{path} is not a file of a catalogue scoring run")
    return Manifest(**json.loads(metadata[META_KEY]))
