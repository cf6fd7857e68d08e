"""Retrieval on held-out (photo, title + description) pairs: clip-style's shared space against
a frozen-feature baseline.

    PYTHONPATH=src python bench/retrieval.py [--data DIR] [--fold 0] [--set key=value ...]

Held out: the labelled products with a photo and words whose hashed fold (the cross-validation
rule, 5 folds) is ``--fold``; they are never seen in stage 1, which aligns on the other
labelled products' pairs and the unlabelled ones (its early stopping reads 15 % of the
training part). Every held-out photo is a query among all held-out titles (photo -> title) and
the reverse (title -> photo): recall@k is the share whose own pair ranks in the top k.

Baseline (a shared space built without contrastive training): a ridge regression from TF-IDF
word + character n-grams of the text to the same frozen EfficientNet-Lite0 pooled photo
features, fitted on the same training pairs; texts are mapped into photo-feature space and
compared by cosine with the (centred) photo features.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_union

from prodclass.cli.experiment import parse_overrides
from prodclass.data.split import hash_folds, product_keys
from prodclass.data.unlabelled import unlabelled_pairs
from prodclass.data.validate import validate
from prodclass.models.contrastive import recall_at
from prodclass.models.registry import create
from prodclass.settings import get_settings
from prodclass.training.cv import inner_validation_mask


def ridge_baseline(
    train_text: list[str], train_photos: np.ndarray, test_text: list[str], alpha: float
) -> np.ndarray:
    """Held-out texts mapped into the photo-feature space (centred by the training mean)."""
    tfidf = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True),
    )
    x = tfidf.fit_transform(train_text)
    mean = train_photos.mean(axis=0)
    ridge = Ridge(alpha=alpha).fit(x, train_photos - mean)
    return ridge.predict(tfidf.transform(test_text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="challenge folder")
    parser.add_argument("--fold", type=int, default=0, help="held-out fold of 5")
    parser.add_argument("--alpha", type=float, default=1.0, help="ridge baseline's alpha")
    parser.add_argument("--set", action="append", default=[], help="clip-style key=value")
    args = parser.parse_args()
    data = args.data or get_settings().data_dir
    products = validate(data).products
    fold = hash_folds(product_keys(products), 5, 42)
    held = fold == args.fold
    train_all, test = products[~held], products[held]
    inner = inner_validation_mask(train_all, 42)
    train, val = train_all[~inner], train_all[inner]
    pairs = test[(test["text"] != "") & (test["image_path"] != "")]

    params = {"stage2": "zero_shot", "unlabelled_dir": str(data)}
    params |= parse_overrides(None, args.set)
    model = create("clip-style", params)
    start = time.perf_counter()
    facts = model.fit(train, val)
    minutes = (time.perf_counter() - start) / 60
    start = time.perf_counter()
    vectors = model.embed(pairs)
    ms = (time.perf_counter() - start) * 1000 / len(pairs)
    rows = {
        "clip-style (stage 1)": (
            recall_at(vectors["image"], vectors["text"]),
            recall_at(vectors["text"], vectors["image"]),
        )
    }

    # the baseline on the same training pairs (the fit's own and the unlabelled ones)
    fit_pairs = pd.concat(
        [
            train[(train["text"] != "") & (train["image_path"] != "")][["text", "image_path"]],
            unlabelled_pairs(data),
        ]
    )
    towers = model.towers
    photos_train = towers.photo_inputs(list(fit_pairs["image_path"]))  # frozen pooled features
    photos_test = towers.photo_inputs(list(pairs["image_path"]))
    mapped = ridge_baseline(list(fit_pairs["text"]), photos_train, list(pairs["text"]), args.alpha)
    centred = photos_test - photos_train.mean(axis=0)
    rows["ridge TF-IDF -> frozen photo features"] = (
        recall_at(centred, mapped),
        recall_at(mapped, centred),
    )
    n = len(pairs)
    chance = {"recall@1": round(1 / n, 4), "recall@10": round(min(10 / n, 1.0), 4)}
    rows["chance"] = (chance, chance)

    table = Table(title=f"retrieval among {n} held-out pairs (fold {args.fold} of 5)")
    for column in ("model", "photo->title R@1", "R@10", "title->photo R@1", "R@10"):
        table.add_column(column)
    for name, (photo_to_title, title_to_photo) in rows.items():
        table.add_row(
            name,
            *(f"{r[k]:.3f}" for r in (photo_to_title, title_to_photo) for k in r),
        )
    console = Console()
    console.print(table)
    console.print(
        f"stage 1: {facts['align_pairs']} training pairs ({facts['n_unlabelled_pairs']} "
        f"unlabelled), {facts['align_epochs_run']} epochs, logit scale "
        f"{facts['logit_scale']:.1f}; fit {minutes:.1f} min, embedding {ms:.1f} ms per product"
    )


if __name__ == "__main__":
    main()
