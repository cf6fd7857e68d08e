"""Cross-validation: the one protocol every model choice is judged by.

Each product's fold is fixed by a hash of its id (``data/split.py``), so every candidate is
scored on the same folds and adding products never moves an old one. Each fold is predicted
by a fresh model fitted on the other folds; the out-of-fold (OOF) probabilities of all
products are then pooled.

Why a paired bootstrap over products of the pooled OOF predictions (and not a t-interval over
the K fold scores): with 5 folds a t-interval has 4 degrees of freedom, its 95 % multiplier is
2.78 and the interval is wide enough to hide every effect we care about; the pooled OOF score
over ~6k products uses every prediction once, and resampling products answers the question
asked here, "how sure are we about this sample's score". It leaves out the variance of refitting
on other data, so it is an interval for this sample, not for every possible training set. The
per-fold mean and sd are reported beside it for reference. Differences between candidates are
paired: the same resampled products score both, which cancels the products' own difficulty.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodclass.data.split import hash_folds, held_out_mask, product_keys
from prodclass.models.base import ProductClassifier
from prodclass.models.registry import create, family_class
from prodclass.timing import stopwatch
from prodclass.training.metrics import (
    calibration_error,
    classification_metrics,
    f1_from_confusions,
    summary,
    target_index,
)

log = logging.getLogger(__name__)

SUBSETS = ("all", "text_only", "image_only", "both")
INNER_VAL_SIZE = 0.15  # share of the training folds a torch family early-stops on
RESAMPLES = 1000
ARRAYS_FILE = "cv_oof.npz"
FACTS_FILE = "cv.json"
_PROBABILITY_FLOOR = 1e-12


@dataclass(frozen=True)
class FoldFacts:
    """What one fold's fit did: sizes, time, its early-stopping epoch and its own scores."""

    fold: int
    n_train: int
    n_inner_val: int
    n_predicted: int
    fit_seconds: float
    predict_seconds: float
    best_epoch: int | None
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class CVResult:
    """Out-of-fold predictions of one candidate, with what is needed to compare it later."""

    family: str
    params: dict[str, Any]
    folds: int
    seed: int
    row_ids: np.ndarray  # (N,) str: the prepared frame's index
    keys: np.ndarray  # (N,) str: what the fold is hashed from (productid, else the row id)
    labels: np.ndarray  # (N,) int prdtypecode
    modalities: np.ndarray  # (N,) str: text_only / image_only / both
    fold_of: np.ndarray  # (N,) int fold each product was predicted in (-1: never trained on)
    classes: np.ndarray  # (C,) int prdtypecode of each probability column
    probabilities: np.ndarray  # (N, C) out-of-fold, temperature-scaled when there is one
    fold_facts: list[FoldFacts]
    temperature: float | None  # fitted on the OOF logits; None for families without logits
    ece: float  # expected calibration error of the OOF probabilities

    @property
    def predicted(self) -> np.ndarray:
        return self.classes[self.probabilities.argmax(axis=1)]

    @property
    def best_epochs(self) -> list[int]:
        return [f.best_epoch for f in self.fold_facts if f.best_epoch is not None]

    def refit_epochs(self) -> int | None:
        """Epochs for a refit on every label: the folds' mean early-stopping epoch, rounded."""
        return max(1, round(float(np.mean(self.best_epochs)))) if self.best_epochs else None

    def save(self, folder: Path) -> Path:
        """``cv_oof.npz`` (ids, labels, folds, probabilities) + ``cv.json`` (the rest)."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            folder / ARRAYS_FILE,
            row_ids=self.row_ids.astype(str),
            keys=self.keys.astype(str),
            labels=self.labels,
            modalities=self.modalities.astype(str),
            fold_of=self.fold_of,
            classes=self.classes,
            probabilities=self.probabilities.astype(np.float32),
        )
        facts = {
            "family": self.family,
            "params": self.params,
            "folds": self.folds,
            "seed": self.seed,
            "fold_facts": [asdict(f) for f in self.fold_facts],
            "temperature": self.temperature,
            "ece": self.ece,
        }
        (folder / FACTS_FILE).write_text(json.dumps(facts, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path) -> CVResult:
        if not (folder / ARRAYS_FILE).is_file() or not (folder / FACTS_FILE).is_file():
            raise FileNotFoundError(f"{folder} holds no cross-validation result ({ARRAYS_FILE})")
        facts = json.loads((folder / FACTS_FILE).read_text())
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
            data = {k: arrays[k] for k in arrays.files}
        return cls(
            family=facts["family"],
            params=facts["params"],
            folds=int(facts["folds"]),
            seed=int(facts["seed"]),
            row_ids=data["row_ids"],
            keys=data.get("keys", data["row_ids"]),  # results saved before keys were kept
            labels=data["labels"].astype(np.int64),
            modalities=data["modalities"],
            fold_of=data["fold_of"].astype(np.int64),
            classes=data["classes"].astype(np.int64),
            probabilities=data["probabilities"].astype(np.float64),
            fold_facts=[FoldFacts(**f) for f in facts["fold_facts"]],
            temperature=facts["temperature"],
            ece=float(facts["ece"]),
        )


def trains_in_epochs(family: str) -> bool:
    """Torch families have ``epochs`` and early-stop on a validation part."""
    return "epochs" in family_class(family).Params.model_fields


def inner_validation_mask(products: pd.DataFrame, seed: int) -> np.ndarray:
    """The rows a torch family early-stops on: the same hash rule, another seed than the
    folds', so the part is not tied to the fold."""
    return held_out_mask(product_keys(products), INNER_VAL_SIZE, seed + 1)


def cross_validate(
    products: pd.DataFrame,
    family: str,
    params: dict[str, Any],
    folds: int = 5,
    seed: int = 42,
    on_fold: Callable[[FoldFacts], None] | None = None,
) -> CVResult:
    """Fit a fresh ``family`` model per fold on the other folds; predict the fold.

    ``products``: a prepared frame (``load_prepared``; its split column is ignored: every
    labelled product is used). Raises ValueError when a fold would be empty.
    """
    if products.index.has_duplicates:
        raise ValueError("cross-validation needs unique row ids (the prepared frame's index)")
    keys = product_keys(products)
    fold_of = hash_folds(keys, folds, seed)
    if len(np.unique(fold_of)) < folds:
        raise ValueError(f"{len(products)} products are too few for {folds} folds")
    labels = products["label"].astype(int).to_numpy()
    classes = np.asarray(sorted(set(labels.tolist())), dtype=np.int64)
    epochs = trains_in_epochs(family)
    create(family, params)  # refuse bad params before the first fit
    probabilities = np.zeros((len(products), len(classes)))
    logits: np.ndarray | None = None
    facts: list[FoldFacts] = []
    for fold in range(folds):
        held = fold_of == fold
        train, test = products[~held], products[held]
        val = None
        if epochs:
            inner = inner_validation_mask(train, seed)
            train, val = train[~inner], train[inner]
        model = create(family, params)
        with stopwatch() as fit_time:
            fit_facts = model.fit(train, val)
        with stopwatch() as predict_time:
            fold_probabilities = _aligned(model.predict_proba(test), model.classes_, classes)
        probabilities[held] = fold_probabilities
        temperature = getattr(model, "temperature", None)
        if temperature is not None:
            logits = np.zeros_like(probabilities) if logits is None else logits
            # softmax(z / T) = p  =>  z = T log p (+ a per-row constant softmax ignores)
            logits[held] = float(temperature) * np.log(
                np.maximum(fold_probabilities, _PROBABILITY_FLOOR)
            )
        best = fit_facts.get("best_epoch")
        fold_facts = FoldFacts(
            fold=fold,
            n_train=len(train),
            n_inner_val=0 if val is None else len(val),
            n_predicted=int(held.sum()),
            fit_seconds=round(fit_time.seconds, 3),
            predict_seconds=round(predict_time.seconds, 3),
            best_epoch=int(best) if best is not None else None,
            scores=_fold_scores(labels[held], classes[fold_probabilities.argmax(axis=1)], test),
        )
        log.info(
            "fold %d/%d: %d products, weighted F1 %.4f, %.1f s",
            fold + 1, folds, held.sum(), fold_facts.scores["weighted_f1"], fit_time.seconds,
        )  # fmt: skip
        facts.append(fold_facts)
        if on_fold is not None:
            on_fold(fold_facts)
    temperature = None
    if logits is not None:
        from prodclass.models.calibration import fit_temperature

        temperature = fit_temperature(logits, target_index(classes, labels))
        probabilities = _softmax(logits / temperature)
    return CVResult(
        family=family,
        params=dict(params),
        folds=folds,
        seed=seed,
        row_ids=products.index.astype(str).to_numpy(),
        keys=np.asarray(keys.astype(str)),
        labels=labels,
        modalities=products["modality"].astype(str).to_numpy(),
        fold_of=fold_of,
        classes=classes,
        probabilities=probabilities,
        fold_facts=facts,
        temperature=temperature,
        ece=round(calibration_error(probabilities, classes, labels), 4),
    )


def with_unseen_predictions(
    result: CVResult, model: ProductClassifier, products: pd.DataFrame
) -> CVResult:
    """``result`` extended with ``model``'s predictions of the ``products`` it was never
    trained on (their key is not among its CV products); their fold is -1.

    Why honest: a model refitted on its CV products has never seen another product, so its
    prediction of one is as out-of-sample as an out-of-fold one. This lets a champion be
    compared with a challenger on the challenger's new products without refitting it.
    """
    unseen = ~product_keys(products).astype(str).isin(set(result.keys.astype(str)))
    rows = products[np.asarray(unseen)]
    if rows.empty:
        return result
    labels = rows["label"].astype(int).to_numpy()
    classes = np.union1d(result.classes, labels).astype(np.int64)
    old = _aligned(result.probabilities, result.classes, classes)
    new = _aligned(model.predict_proba(rows), model.classes_, classes)
    return replace(
        result,
        row_ids=np.concatenate([result.row_ids.astype(str), rows.index.astype(str)]),
        keys=np.concatenate([result.keys.astype(str), product_keys(rows).astype(str)]),
        labels=np.concatenate([result.labels, labels]),
        modalities=np.concatenate(
            [result.modalities.astype(str), rows["modality"].astype(str).to_numpy()]
        ),
        fold_of=np.concatenate([result.fold_of, np.full(len(rows), -1, dtype=np.int64)]),
        classes=classes,
        probabilities=np.vstack([old, new]),
    )


def _aligned(probabilities: np.ndarray, model_classes: np.ndarray, classes: np.ndarray):
    """Columns in ``classes`` order; a class the fold's model never saw gets 0."""
    out = np.zeros((len(probabilities), len(classes)))
    column = {int(c): i for i, c in enumerate(classes)}
    for j, code in enumerate(model_classes):
        if int(code) in column:
            out[:, column[int(code)]] = probabilities[:, j]
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fold_scores(y_true: np.ndarray, y_pred: np.ndarray, fold: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    modality = fold["modality"].to_numpy()
    for subset in SUBSETS:
        mask = np.ones(len(y_true), bool) if subset == "all" else modality == subset
        if mask.any():
            m = classification_metrics(y_true[mask], y_pred[mask])
            prefix = "" if subset == "all" else f"{subset}_"
            out[f"{prefix}weighted_f1"] = m["weighted_f1"]
            out[f"{prefix}macro_f1"] = m["macro_f1"]
    return out


# ---- scoring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """An estimate on every product (pooled out-of-fold) and its 95 % bootstrap interval."""

    mean: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class SubsetScore:
    subset: str
    n: int
    weighted_f1: Interval
    macro_f1: Interval
    fold_weighted_f1: tuple[float, float]  # (mean, sd) over folds, for reference
    fold_macro_f1: tuple[float, float]
    per_class: dict[str, dict[str, Any]]  # per prdtypecode: precision, recall, f1, support

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus reference on the products both predicted out of fold."""

    subset: str
    reference: str
    n: int
    weighted_f1: Interval
    macro_f1: Interval

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def subset_mask(modalities: np.ndarray, subset: str) -> np.ndarray:
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}")
    return np.ones(len(modalities), bool) if subset == "all" else modalities == subset


def _bootstrap_f1(
    y_true: np.ndarray,
    predictions: list[np.ndarray],
    classes: np.ndarray,
    resamples: int,
    seed: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weighted, macro) F1 of each prediction vector over the same resampled products."""
    n_classes = len(classes)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y_true), size=(resamples, len(y_true)))
    offsets = (np.arange(resamples) * n_classes * n_classes)[:, None]
    t = target_index(classes, y_true)
    out = []
    for y_pred in predictions:
        cells = t * n_classes + target_index(classes, y_pred)
        confusions = np.bincount(
            (offsets + cells[draws]).ravel(), minlength=resamples * n_classes * n_classes
        ).reshape(resamples, n_classes, n_classes)
        out.append(f1_from_confusions(confusions))
    return out


def _interval(point: float, samples: np.ndarray) -> Interval:
    low, high = np.percentile(samples, [2.5, 97.5])
    return Interval(round(float(point), 4), round(float(low), 4), round(float(high), 4))


def _mean_sd(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    sd = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return round(float(array.mean()), 4), round(sd, 4)


def score(
    result: CVResult,
    subsets: tuple[str, ...] = SUBSETS,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, SubsetScore]:
    """Per subset (with products): weighted and macro F1, estimate and 95 % interval, the
    per-fold mean and sd, and per-class precision/recall/F1 (rare classes show there)."""
    out: dict[str, SubsetScore] = {}
    predicted = result.predicted
    for subset in subsets:
        mask = subset_mask(result.modalities, subset)
        if not mask.any():
            continue
        y_true, y_pred = result.labels[mask], predicted[mask]
        report = classification_metrics(y_true, y_pred)
        ((weighted, macro),) = _bootstrap_f1(y_true, [y_pred], result.classes, resamples, seed)
        per_fold = [
            classification_metrics(y_true[in_fold], y_pred[in_fold])
            for fold in range(result.folds)
            if (in_fold := result.fold_of[mask] == fold).any()
        ]
        out[subset] = SubsetScore(
            subset=subset,
            n=int(mask.sum()),
            weighted_f1=_interval(report["weighted_f1"], weighted),
            macro_f1=_interval(report["macro_f1"], macro),
            fold_weighted_f1=_mean_sd([m["weighted_f1"] for m in per_fold]),
            fold_macro_f1=_mean_sd([m["macro_f1"] for m in per_fold]),
            per_class={
                code: row for code, row in report["per_class"].items() if row["support"] > 0
            },
        )
    return out


def _common(a: CVResult, b: CVResult) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``a`` and ``b`` of the products both predicted, with the same label."""
    position_b = {rid: i for i, rid in enumerate(b.row_ids.astype(str))}
    pairs = [
        (i, position_b[rid])
        for i, rid in enumerate(a.row_ids.astype(str))
        if rid in position_b and a.labels[i] == b.labels[position_b[rid]]
    ]
    if not pairs:
        raise ValueError("the two cross-validation results share no product")
    ia, ib = np.asarray(pairs, dtype=np.int64).T
    return ia, ib


def paired_difference(
    result_a: CVResult,
    result_b: CVResult,
    reference_name: str,
    subsets: tuple[str, ...] = SUBSETS,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, PairedDifference]:
    """``result_a`` minus ``result_b`` (the reference, named ``reference_name``) per subset,
    on the products both predicted out of fold: estimate and 95 % paired-bootstrap interval."""
    ia, ib = _common(result_a, result_b)
    labels, modalities = result_a.labels[ia], result_a.modalities[ia]
    pred_a, pred_b = result_a.predicted[ia], result_b.predicted[ib]
    classes = np.union1d(np.union1d(result_a.classes, result_b.classes), labels)
    out: dict[str, PairedDifference] = {}
    for subset in subsets:
        mask = subset_mask(modalities, subset)
        if not mask.any():
            continue
        y = labels[mask]
        a, b = classification_metrics(y, pred_a[mask]), classification_metrics(y, pred_b[mask])
        (wa, ma), (wb, mb) = _bootstrap_f1(
            y, [pred_a[mask], pred_b[mask]], classes, resamples, seed
        )
        out[subset] = PairedDifference(
            subset=subset,
            reference=reference_name,
            n=int(mask.sum()),
            weighted_f1=_interval(a["weighted_f1"] - b["weighted_f1"], wa - wb),
            macro_f1=_interval(a["macro_f1"] - b["macro_f1"], ma - mb),
        )
    return out


def paired_f1_difference(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Weighted F1 of ``pred_a`` minus ``pred_b`` on the same products (two models that both
    answered each one: shadow traffic), with its 95 % paired-bootstrap interval."""
    y_true, pred_a, pred_b = (np.asarray(v, dtype=np.int64) for v in (y_true, pred_a, pred_b))
    classes = np.union1d(np.union1d(y_true, pred_a), pred_b)
    (wa, _), (wb, _) = _bootstrap_f1(y_true, [pred_a, pred_b], classes, resamples, seed)
    point = (
        classification_metrics(y_true, pred_a)["weighted_f1"]
        - classification_metrics(y_true, pred_b)["weighted_f1"]
    )
    return _interval(point, wa - wb)


def unpaired_f1_difference(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Weighted F1 of ``a`` minus ``b``, each ``(truth, predicted)`` on products of its own
    (the two arms of a traffic split), each resampled on its own: the 95 % bootstrap
    interval of the difference."""
    (ya, pa), (yb, pb) = ((np.asarray(t, np.int64), np.asarray(p, np.int64)) for t, p in (a, b))
    classes = np.union1d(np.union1d(ya, pa), np.union1d(yb, pb))
    ((wa, _),) = _bootstrap_f1(ya, [pa], classes, resamples, seed)
    ((wb, _),) = _bootstrap_f1(yb, [pb], classes, resamples, seed + 1)
    point = (
        classification_metrics(ya, pa)["weighted_f1"]
        - classification_metrics(yb, pb)["weighted_f1"]
    )
    return _interval(point, wa - wb)


def per_class_changes(result_a: CVResult, result_b: CVResult) -> dict[str, dict[str, float]]:
    """Per prdtypecode, F1 and recall of ``a`` and ``b`` and a's change, on common products."""
    ia, ib = _common(result_a, result_b)
    labels = result_a.labels[ia]
    a = classification_metrics(labels, result_a.predicted[ia])["per_class"]
    b = classification_metrics(labels, result_b.predicted[ib])["per_class"]
    return {
        code: {
            "support": a[code]["support"],
            "f1": a[code]["f1"],
            "reference_f1": b[code]["f1"],
            "f1_change": round(a[code]["f1"] - b[code]["f1"], 4),
            "recall": a[code]["recall"],
            "reference_recall": b[code]["recall"],
        }
        for code in a
        if a[code]["support"] > 0
    }


def cv_report(result: CVResult) -> dict[str, Any]:
    """The model's quality as CV estimated it, in the shape of an evaluation report (headline
    numbers, per class, per modality, ECE: all out of fold) plus the intervals per subset."""
    predicted = result.predicted
    report = classification_metrics(result.labels, predicted)
    report["ece"] = result.ece
    report["by_modality"] = {
        m: summary(classification_metrics(result.labels[mask], predicted[mask]))
        | {"ece": round(calibration_error(result.probabilities[mask], result.classes,
                                          result.labels[mask]), 4)}
        for m in SUBSETS[1:]
        if (mask := result.modalities == m).any()
    }  # fmt: skip
    report["cv"] = {
        "family": result.family,
        "folds": result.folds,
        "seed": result.seed,
        "temperature": result.temperature,
        "best_epochs": result.best_epochs,
        "fit_seconds": [f.fit_seconds for f in result.fold_facts],
        "scores": {k: v.to_dict() for k, v in score(result).items()},
    }
    return report
