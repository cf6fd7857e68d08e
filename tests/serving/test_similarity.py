"""Similarity in the served model's space: two products compared, and the labelled catalogue
searched for look-alikes of a product (duplicates, mis-categorised listings)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prodclass.cli.main import app
from prodclass.data.layout import ChallengeLayout, read_features, read_labels


@pytest.fixture(scope="module")
def catalogue(six_codes_prepared) -> ChallengeLayout:
    """The raw folder the six-code products were prepared from."""
    meta = json.loads((six_codes_prepared / "meta.json").read_text())
    return ChallengeLayout(Path(meta["data_dir"]))


def test_similar_products_need_an_index_of_the_serving_version(client, auth, served):
    answer = client.get(
        "/products/similar", params={"designation": "lampe"}, headers=auth["client"]
    )
    assert answer.status_code == 409 and "prodclass index build" in answer.json()["detail"]


@pytest.fixture(scope="module")
def indexed(client, catalogue, served) -> ChallengeLayout:
    result = CliRunner().invoke(app, ["index", "build", "--data", str(catalogue.root)])
    assert result.exit_code == 0, result.output
    index = served.state / "similarity" / served.multimodal_version / "index.json"
    assert index.is_file(), result.output
    return catalogue


def test_a_catalogue_products_neighbours_mostly_share_its_category(client, auth, indexed):
    labels = read_labels(indexed.y_train)["prdtypecode"]
    same = 0
    queries = list(labels.index[::12])  # 20 products across the six codes
    for row_id in queries:
        answer = client.get(
            "/products/similar", params={"row_id": row_id, "k": 5}, headers=auth["client"]
        ).json()
        neighbours = answer["neighbours"]
        assert len(neighbours) == 5 and row_id not in [n["row_id"] for n in neighbours]
        scores = [n["score"] for n in neighbours]
        assert scores == sorted(scores, reverse=True) and all(
            -1.0001 <= s <= 1.0001 for s in scores
        )
        same += str(neighbours[0]["prdtypecode"]) == labels[row_id]
    assert same / len(queries) >= 0.6, (
        f"top neighbour shares the category for {same}/{len(queries)}"
    )


def test_an_uploaded_duplicate_finds_the_listing_it_copies(client, auth, indexed):
    x = read_features(indexed.x_train)
    row_id = next(
        r
        for r, row in x.iterrows()
        if row["designation"] and indexed.image_path(row["imageid"], row["productid"]).is_file()
    )
    row = x.loc[row_id]
    photo = indexed.image_path(row["imageid"], row["productid"])
    answer = client.post(
        "/products/similar",
        data={"designation": row["designation"], "description": row["description"], "k": "3"},
        files={"image": ("p.jpg", photo.read_bytes(), "image/jpeg")},
        headers=auth["client"],
    ).json()
    top = answer["neighbours"][0]
    assert top["row_id"] == row_id and top["score"] > 0.99
    assert top["scores"]["image"] > 0.99 and top["scores"]["text"] > 0.99
    by_photo = client.post(
        "/products/similar",
        data={"modality": "image", "k": "1"},
        files={"image": ("p.jpg", photo.read_bytes(), "image/jpeg")},
        headers=auth["client"],
    ).json()
    assert by_photo["neighbours"][0]["row_id"] == row_id


def test_two_products_compared_per_modality(client, auth, sample_products):
    (fields_a, photo_a), (fields_b, photo_b) = sample_products.both[:2]

    def product(fields, photo=None):
        out = {"designation": fields["designation"], "description": fields["description"]}
        return out | ({"image_base64": base64.b64encode(photo).decode()} if photo else {})

    def compare(a, b):
        answer = client.post("/predict/similarity", json={"a": a, "b": b}, headers=auth["client"])
        assert answer.status_code == 200, answer.text
        return answer.json()

    itself = compare(product(fields_a, photo_a), product(fields_a, photo_a))
    assert itself["text"] > 0.999 and itself["image"] > 0.999 and itself["overall"] > 0.999
    other = compare(product(fields_a, photo_a), product(fields_b, photo_b))
    assert other["text"] < 0.9 and other["image"] < 0.99
    assert other["overall"] == pytest.approx((other["text"] + other["image"]) / 2, abs=1e-5)
    disjoint = compare(product(fields_a), {"image_base64": base64.b64encode(photo_b).decode()})
    assert disjoint["text"] is None and disjoint["image"] is None and disjoint["overall"] is None
    empty = client.post(
        "/predict/similarity", json={"a": {}, "b": product(fields_a)}, headers=auth["client"]
    )
    assert empty.status_code == 422 and "product 0" in empty.json()["detail"]
