"""Reviewers' feedback on predictions, and its export as labelled data in the challenge layout
(so corrected products go back into training like any other data folder)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from prodclass.data.layout import ChallengeLayout
from prodclass.data.taxonomy import is_known
from prodclass.db.tables import Feedback, PredictionRecord
from prodclass.photo_store import PhotoStore

EXPORTED_ID_BASE = 9_000_000_000  # ids given to products that came without numeric ones


class FeedbackError(ValueError):
    pass


def record_feedback(
    session: Session, prediction_id: str, username: str, prdtypecode: int, comment: str = ""
) -> Feedback:
    if not is_known(prdtypecode):
        raise FeedbackError(f"{prdtypecode} is not one of the 27 product-type codes")
    prediction = session.get(PredictionRecord, prediction_id)
    if prediction is None:
        raise LookupError(f"no prediction {prediction_id}")
    if prediction.shadow_of is not None:  # its product is reviewed through the answer given
        raise FeedbackError(
            f"prediction {prediction_id} is a shadow answer that no client saw; review "
            f"prediction {prediction.shadow_of}"
        )
    feedback = Feedback(
        prediction_id=prediction_id,
        username=username,
        prdtypecode=prdtypecode,
        is_correction=prdtypecode != prediction.prdtypecode,
        comment=comment,
    )
    session.add(feedback)
    session.flush()
    return feedback


def list_feedback(
    session: Session, corrections_only: bool = False, limit: int = 100
) -> list[Feedback]:
    query = select(Feedback).order_by(Feedback.id.desc()).limit(limit)
    if corrections_only:
        query = query.where(Feedback.is_correction)
    return list(session.scalars(query))


def export_labelled(session: Session, photos: PhotoStore, out: Path) -> int:
    """Write every reviewed product (latest verdict per prediction) to ``out`` in the challenge
    layout: X_train_update.csv, Y_train_CVw08PX.csv and images/image_train/ (the photos the
    store holds). Returns the count."""
    rows = session.execute(
        select(Feedback, PredictionRecord)
        .join(PredictionRecord, Feedback.prediction_id == PredictionRecord.id)
        .order_by(Feedback.id)
    ).all()
    latest: dict[str, tuple[Feedback, PredictionRecord]] = {}
    for feedback, prediction in rows:
        latest[prediction.id] = (feedback, prediction)
    layout = ChallengeLayout(out)
    layout.image_dir("train").mkdir(parents=True, exist_ok=True)
    x, y = [], []
    for feedback, prediction in latest.values():
        productid = _numeric(prediction.product_id, EXPORTED_ID_BASE + feedback.id)
        imageid = _numeric(prediction.imageid, EXPORTED_ID_BASE + feedback.id)
        if prediction.image_sha256:
            dest = layout.image_path(str(imageid), str(productid), "train")
            photos.save_as(prediction.image_sha256, dest)  # not stored (yet): text only
        x.append(
            {
                "designation": prediction.designation,
                "description": prediction.description,
                "productid": productid,
                "imageid": imageid,
            }
        )
        y.append({"prdtypecode": feedback.prdtypecode})
    pd.DataFrame(x, columns=["designation", "description", "productid", "imageid"]).to_csv(
        layout.x_train
    )
    pd.DataFrame(y, columns=["prdtypecode"]).to_csv(layout.y_train)
    return len(x)


def _numeric(value: str | None, fallback: int) -> int:
    return int(value) if value and value.isdigit() else fallback
