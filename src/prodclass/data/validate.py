"""Validation of a data folder in the challenge layout.

Nothing is dropped silently: every rejected row is listed with its reasons, every row-level
problem (a missing or broken photo, an unknown label) is listed, and fatal problems (no label
column, a missing file) stop the run with one clear sentence.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from prodclass.data import taxonomy
from prodclass.data.images import check_image
from prodclass.data.layout import (
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    ChallengeLayout,
    image_name,
    nul_fields,
    read_features,
    read_labels,
)
from prodclass.data.text import clean_text, product_text

log = logging.getLogger(__name__)

# Row-level problem codes. REJECTING codes make a row unusable; the others only lose a modality.
REJECTING = frozenset(
    {
        "duplicate_id",
        "duplicate_productid",
        "bad_id",
        "missing_label",
        "bad_label",
        "unknown_label",
        "no_text_no_image",
        "nul_character",
    }
)


class DataValidationError(RuntimeError):
    """A fatal problem: the folder cannot be used at all. The message is one sentence."""


@dataclass
class RowIssue:
    row_id: str
    code: str
    message: str


@dataclass
class ValidationReport:
    data_dir: str
    subset: str
    n_rows: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    modalities: dict[str, int] = field(default_factory=dict)
    issue_counts: dict[str, int] = field(default_factory=dict)
    rejected: list[dict[str, object]] = field(default_factory=list)
    issues: list[RowIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.fatal

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


@dataclass
class ValidatedData:
    """The accepted rows, one per product, with what the models need, plus the report."""

    products: pd.DataFrame
    report: ValidationReport


def validate(
    data_dir: Path,
    subset: str = "train",
    check_images: bool = True,
    workers: int = 2,
) -> ValidatedData:
    """Validate ``data_dir`` and return the accepted products and the full report.

    ``subset`` is ``train`` (labels required) or ``test`` (no labels). Raises
    DataValidationError on a fatal problem; the report then holds that sentence too.
    """
    layout = ChallengeLayout(Path(data_dir).resolve())
    # the folder as given: a relative one (the default) names no machine in the report
    report = ValidationReport(data_dir=str(data_dir), subset=subset)
    try:
        features, labels = _read_files(layout, subset, report)
    except DataValidationError as exc:
        report.fatal.append(str(exc))
        raise
    issues: list[RowIssue] = []
    report.n_rows = len(features)

    features = _drop_duplicate_ids(features, issues)
    _check_nul(features, labels, issues)
    _check_ids(features, issues)
    if labels is not None:
        features["label"] = _check_labels(features, labels, issues, report)
    else:
        features["label"] = pd.NA

    features["text"] = [
        product_text(d, s) for d, s in zip(features["designation"], features["description"])
    ]
    features["title"] = [clean_text(d) for d in features["designation"]]
    features["has_text"] = features["text"].str.len() > 0
    image_dir = layout.image_dir(subset)
    features["image_path"] = [
        str(image_dir / image_name(i, p))
        for i, p in zip(features["imageid"], features["productid"])
    ]
    features["has_image"] = _check_images(features, issues, check_images, workers)
    features.loc[~features["has_image"], "image_path"] = ""

    for row_id in features.index[~features["has_text"] & ~features["has_image"]]:
        issues.append(RowIssue(row_id, "no_text_no_image", "empty text and no usable image"))

    rejected_reasons: dict[str, list[str]] = {}
    for issue in issues:
        if issue.code in REJECTING:
            rejected_reasons.setdefault(issue.row_id, []).append(issue.code)
    # duplicate_id rows were already removed; their id's first occurrence stays unless it has
    # problems of its own
    own_problems = {r for r, codes in rejected_reasons.items() if set(codes) - {"duplicate_id"}}
    accepted = features[~features.index.isin(list(own_problems))].copy()
    accepted["modality"] = _modality(accepted)

    report.issues = issues
    report.issue_counts = dict(Counter(i.code for i in issues))
    report.rejected = [{"row_id": r, "reasons": reasons} for r, reasons in rejected_reasons.items()]
    report.n_rejected = report.n_rows - len(accepted)
    report.n_accepted = len(accepted)
    report.modalities = dict(Counter(accepted["modality"]))
    columns = [
        "productid",
        "imageid",
        "designation",
        "description",
        "text",
        "title",
        "image_path",
        "has_text",
        "has_image",
        "modality",
        "label",
    ]
    return ValidatedData(products=accepted[columns], report=report)


def _read_files(
    layout: ChallengeLayout, subset: str, report: ValidationReport
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    x_path = layout.x_train if subset == "train" else layout.x_test
    if not layout.root.is_dir():
        raise DataValidationError(f"data folder {layout.root} does not exist")
    if not x_path.is_file():
        raise DataValidationError(f"{x_path.name} is missing from {layout.root}")
    features = _read_csv(read_features, x_path)
    if features.empty:
        raise DataValidationError(f"{x_path.name} has no rows")
    missing = [c for c in FEATURE_COLUMNS if c not in features.columns]
    if missing:
        raise DataValidationError(f"{x_path.name} lacks column(s): {', '.join(missing)}")
    extra = [c for c in features.columns if c not in FEATURE_COLUMNS]
    if extra:
        report.warnings.append(f"{x_path.name} has extra column(s), ignored: {', '.join(extra)}")
    features = features[list(FEATURE_COLUMNS)].copy()
    if subset != "train":
        return features, None
    if not layout.y_train.is_file():
        raise DataValidationError(f"{layout.y_train.name} is missing from {layout.root}")
    labels = _read_csv(read_labels, layout.y_train)
    if LABEL_COLUMN not in labels.columns:
        raise DataValidationError(f"{layout.y_train.name} has no {LABEL_COLUMN} column")
    extra = [c for c in labels.columns if c != LABEL_COLUMN]
    if extra:
        report.warnings.append(
            f"{layout.y_train.name} has extra column(s), ignored: {', '.join(extra)}"
        )
    return features, labels[[LABEL_COLUMN]]


def _read_csv(reader, path: Path) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    try:
        return reader(path)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataValidationError(f"{path.name} is not a readable CSV ({exc})") from exc


def _drop_duplicate_ids(features: pd.DataFrame, issues: list[RowIssue]) -> pd.DataFrame:
    """Keep the first row of each id; later ones are rejected (listed), so ids become unique."""
    duplicated = features.index.duplicated(keep="first")
    for row_id in features.index[duplicated]:
        issues.append(RowIssue(row_id, "duplicate_id", f"row id {row_id} appears more than once"))
    return features[~duplicated].copy()


def _check_nul(features: pd.DataFrame, labels: pd.DataFrame | None, issues: list[RowIssue]) -> None:
    """A NUL character in a field: no stored text can hold it, and a CSV reader would end the
    field there (a cut title, id or label). The row is rejected, never cut."""
    frames = [features] if labels is None else [features, labels]  # labels may repeat ids
    for frame in frames:
        for row_id, column, position in nul_fields(frame.fillna("")):
            issues.append(
                RowIssue(
                    row_id,
                    "nul_character",
                    f"{column} holds a NUL character (\\u0000) at character {position}: no "
                    "stored text can hold it and a CSV reader would end the field there",
                )
            )


def _check_ids(features: pd.DataFrame, issues: list[RowIssue]) -> None:
    for column in ("productid", "imageid"):
        values = features[column].fillna("").astype(str)
        bad = ~values.str.fullmatch(r"\d+").fillna(False).astype(bool)
        for row_id, value in features.loc[bad, column].items():
            issues.append(RowIssue(row_id, "bad_id", f"{column} {value!r} is not a number"))
    dup_products = features["productid"].duplicated(keep="first") & (features["productid"] != "")
    for row_id, value in features.loc[dup_products, "productid"].items():
        issues.append(
            RowIssue(
                row_id, "duplicate_productid", f"productid {value} already seen on another row"
            )
        )


def _check_labels(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    issues: list[RowIssue],
    report: ValidationReport,
) -> pd.Series:
    labels = labels[~labels.index.duplicated(keep="first")]
    orphans = labels.index.difference(features.index)
    if len(orphans):
        report.warnings.append(
            f"{len(orphans)} label row(s) have no features row, ignored: "
            + ", ".join(map(str, orphans[:20]))
            + (" ..." if len(orphans) > 20 else "")
        )
    raw = labels[LABEL_COLUMN].reindex(features.index)
    # as floats: "inf", "1e400" and integers beyond int64 parse too, and are refused below
    parsed = pd.to_numeric(raw, errors="coerce").astype(float)
    for row_id, value, code in zip(features.index, raw, parsed):
        if pd.isna(value) or value == "":
            issues.append(RowIssue(row_id, "missing_label", "no prdtypecode for this row"))
        elif pd.isna(code) or not math.isfinite(code) or code != int(code):
            issues.append(RowIssue(row_id, "bad_label", f"prdtypecode {value!r} is not an integer"))
        elif not taxonomy.is_known(int(code)):
            issues.append(
                RowIssue(
                    row_id, "unknown_label", f"prdtypecode {int(code)} is not one of the 27 codes"
                )
            )
    # fractions, infinities and numbers beyond int64 (rejected rows above) carry no label
    return parsed.where((parsed % 1 == 0) & (parsed.abs() < 2**63)).astype("Int64")


def _check_images(
    features: pd.DataFrame, issues: list[RowIssue], decode: bool, workers: int
) -> pd.Series:
    paths = [Path(p) for p in features["image_path"]]
    exists = [p.is_file() for p in paths]
    problems: list[str | None] = [None] * len(paths)
    if decode:
        todo = [i for i, ok in enumerate(exists) if ok]
        with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
            for i, problem in zip(todo, pool.map(lambda i: check_image(paths[i]), todo)):
                problems[i] = problem
    usable = []
    for row_id, path, present, problem in zip(features.index, paths, exists, problems):
        if not present:
            issues.append(RowIssue(row_id, "image_missing", f"no file {path.name}"))
        elif problem:
            issues.append(RowIssue(row_id, "image_unreadable", f"{path.name}: {problem}"))
        usable.append(present and problem is None)
    return pd.Series(usable, index=features.index, dtype=bool)


def _modality(products: pd.DataFrame) -> pd.Series:
    both = products["has_text"] & products["has_image"]
    return pd.Series(
        [
            "both" if b else ("text_only" if t else "image_only")
            for b, t in zip(both, products["has_text"])
        ],
        index=products.index,
        dtype=object,
    )
