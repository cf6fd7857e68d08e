"""The catalogue's photos searched by a phrase, in the shared text-photo space of a real (tiny)
clip-style model trained on sample products, and the refusal of a model without such a space;
and the vectors a prediction carries when asked (``return_embedding``), compared with the
served model's own ``embed``."""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from prodclass.data.text import product_text
from prodclass.data.validate import validate
from prodclass.models.base import NoSharedSpaceError
from prodclass.models.registry import load_model_dir
from prodclass.serving.api.app import create_app
from prodclass.serving.predictor import Predictor
from prodclass.serving.similarity import text_query
from tests.serving.conftest import ClipServed, login, wait_ready

PHRASE = "piscine gonflable"


@pytest.fixture(scope="module")
def clip_client(clip_served: ClipServed) -> Iterator[TestClient]:
    with TestClient(create_app(clip_served.settings)) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def clip_headers(clip_client: TestClient) -> dict[str, str]:
    return login(clip_client, "client")


@pytest.fixture(scope="module")
def clip_model(clip_served: ClipServed):
    """The served model, loaded here from its folder: the answers' reference."""
    return load_model_dir(clip_served.folder)


@pytest.fixture(scope="module")
def with_photos(clip_served: ClipServed) -> pd.DataFrame:
    """The indexed catalogue's products that have a photo."""
    products = validate(clip_served.catalogue).products
    return products[products["image_path"] != ""]


def _search(client: TestClient, headers: dict, **params) -> dict:
    answer = client.get("/products/similar", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


# ---- text -> photo search ----------------------------------------------------------------


def test_a_phrase_finds_the_photos_nearest_to_it_as_embed_texts_ranks_them(
    clip_client, clip_headers, clip_model, with_photos
):
    answer = _search(clip_client, clip_headers, text=PHRASE, modality="image", k=10)
    assert answer["model"]["family"] == "clip-style"
    neighbours = answer["neighbours"]
    assert len(neighbours) == 10
    assert {n["row_id"] for n in neighbours} <= set(with_photos.index)  # photos only
    assert all(set(n["scores"]) == {"image"} for n in neighbours)
    # the same ranking, computed directly: cosine of the phrase's vector with every photo's
    phrase = clip_model.embed_texts([product_text(PHRASE, "")])[0]  # (D,) unit
    photos = clip_model.embed(with_photos[["text", "image_path"]].reset_index(drop=True))["image"]
    cosine = photos @ phrase / np.linalg.norm(photos, axis=1)
    best = np.argsort(-cosine)[:10]
    assert [n["row_id"] for n in neighbours] == list(with_photos.index[best])
    np.testing.assert_allclose([n["score"] for n in neighbours], cosine[best], atol=1e-5)


def test_a_products_own_title_finds_its_photo_far_more_often_than_chance(
    clip_client, clip_headers, with_photos
):
    titled = with_photos[with_photos["designation"] != ""]
    found = 0
    for row_id, title in titled["designation"].items():
        answer = _search(clip_client, clip_headers, text=title, modality="image", k=10)
        found += row_id in [n["row_id"] for n in answer["neighbours"]]
    chance = 10 / len(with_photos)  # ten photos drawn at random (measured: 0.43 vs 0.08)
    assert found / len(titled) > 3 * chance, (found, len(titled), chance)


def test_a_phrase_searches_titles_and_both_modalities_in_the_same_space(clip_client, clip_headers):
    titles = _search(clip_client, clip_headers, text=PHRASE, modality="text", k=5)["neighbours"]
    assert all(set(n["scores"]) == {"text"} for n in titles)
    both = _search(clip_client, clip_headers, text=PHRASE, modality="both", k=5)["neighbours"]
    for n in both:
        given = [s for s in n["scores"].values() if s is not None]
        assert n["score"] == pytest.approx(sum(given) / len(given), abs=1e-5)


def test_a_search_result_shows_its_photo(clip_client, clip_headers, with_photos):
    (top,) = _search(clip_client, clip_headers, text=PHRASE, modality="image", k=1)["neighbours"]
    photo = clip_client.get(f"/products/{top['row_id']}/image", headers=clip_headers)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content == Path(with_photos.loc[top["row_id"], "image_path"]).read_bytes()
    unknown = clip_client.get("/products/no-such-row/image", headers=clip_headers)
    assert unknown.status_code == 404 and "no catalogue product" in unknown.json()["detail"]


def test_a_search_without_words_or_with_two_queries_is_refused(clip_client, clip_headers):
    for params, reason in (
        ({"text": "  <p> </p> "}, "no words to search by"),
        ({"text": PHRASE, "designation": "lampe"}, "one at a time"),
    ):
        answer = clip_client.get("/products/similar", params=params, headers=clip_headers)
        assert answer.status_code == 422 and reason in answer.json()["detail"], answer.text


def test_the_champion_family_has_no_shared_space_and_answers_409_saying_why(client, auth):
    answer = client.get(
        "/products/similar", params={"text": PHRASE, "modality": "image"}, headers=auth["client"]
    )
    assert answer.status_code == 409, answer.text
    detail = answer.json()["detail"]
    assert "late-fusion" in detail and "separate spaces" in detail


def test_a_clip_style_model_whose_towers_were_never_aligned_cannot_search(clip_model):
    unaligned = copy.copy(clip_model)
    unaligned.params = clip_model.params.model_copy(update={"align_epochs": 0})
    assert clip_model.shared_space_problem() is None
    with pytest.raises(NoSharedSpaceError, match="never aligned"):
        text_query(Predictor(unaligned, "unaligned"), PHRASE)


# ---- return_embedding ----------------------------------------------------------------------


def _direct(model, fields: dict, photo: bytes | None, tmp_path: Path) -> dict:
    """What the model's own ``embed`` gives the product (the reference of the answers)."""
    path = ""
    if photo is not None:
        path = str(tmp_path / "photo.jpg")
        Path(path).write_bytes(photo)
    text = product_text(fields["designation"], fields.get("description", ""))
    return model.embed(pd.DataFrame({"text": [text], "image_path": [path]}))


def _vector(embedding: dict) -> np.ndarray:
    """An answer's embedding as a dense vector (a sparse one rebuilt from its indices)."""
    if embedding["indices"] is None:
        assert len(embedding["values"]) == embedding["dimension"]
        return np.asarray(embedding["values"])
    dense = np.zeros(embedding["dimension"])
    dense[embedding["indices"]] = embedding["values"]
    return dense


def test_a_prediction_carries_the_clip_style_vectors_when_asked(
    clip_client, clip_headers, clip_model, sample_products, tmp_path
):
    fields, photo = sample_products.both[0]
    form = {"designation": fields["designation"], "description": fields["description"]}
    files = {"image": ("p.jpg", photo, "image/jpeg")}
    plain = clip_client.post("/predict", data=form, files=files, headers=clip_headers)
    assert plain.status_code == 200 and "embeddings" not in plain.json()
    asked = clip_client.post(
        "/predict", data=form | {"return_embedding": "true"}, files=files, headers=clip_headers
    )
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    assert answer["prdtypecode"] == plain.json()["prdtypecode"]
    embeddings = {e["modality"]: e for e in answer["embeddings"]}
    assert set(embeddings) == {"text", "image"}
    direct = _direct(clip_model, fields, photo, tmp_path)
    for modality, embedding in embeddings.items():
        assert embedding["dimension"] == 32 and embedding["indices"] is None
        assert embedding["shared_space"] is True
        np.testing.assert_allclose(_vector(embedding), direct[modality][0], atol=1e-5)


def test_a_batch_carries_each_products_own_vectors_when_asked(
    clip_client, clip_headers, sample_products
):
    (fields, photo), (other, _) = sample_products.both[:2]
    products = [
        {"designation": fields["designation"], "description": fields["description"]}
        | {"image_base64": base64.b64encode(photo).decode()},
        {"designation": other["designation"]},  # text only: no photo vector
    ]
    plain = clip_client.post("/predict/batch", json={"products": products}, headers=clip_headers)
    assert plain.status_code == 200
    assert all("embeddings" not in p for p in plain.json()["predictions"])
    asked = clip_client.post(
        "/predict/batch",
        json={"products": products, "return_embedding": True},
        headers=clip_headers,
    )
    assert asked.status_code == 200, asked.text
    first, second = asked.json()["predictions"]
    assert [e["modality"] for e in first["embeddings"]] == ["text", "image"]
    assert [e["modality"] for e in second["embeddings"]] == ["text"]
    single = clip_client.post(
        "/predict",
        data={k: v for k, v in products[0].items() if k != "image_base64"}
        | {"return_embedding": "true"},
        files={"image": ("p.jpg", photo, "image/jpeg")},
        headers=clip_headers,
    ).json()
    for batch_vector, alone in zip(first["embeddings"], single["embeddings"]):
        np.testing.assert_allclose(batch_vector["values"], alone["values"], atol=1e-6)


def test_the_champions_vectors_are_sparse_text_and_dense_photo_in_separate_spaces(
    client, auth, sample_products, tmp_path
):
    fields, photo = sample_products.both[2]
    answer = client.post(
        "/predict",
        data={"designation": fields["designation"], "return_embedding": "true"},
        files={"image": ("p.jpg", photo, "image/jpeg")},
        headers=auth["client"],
    )
    assert answer.status_code == 200, answer.text
    embeddings = {e["modality"]: e for e in answer.json()["embeddings"]}
    assert not embeddings["text"]["shared_space"] and not embeddings["image"]["shared_space"]
    text = embeddings["text"]
    assert text["indices"] == sorted(text["indices"]) and len(text["indices"]) == len(
        text["values"]
    )
    assert 0 < len(text["values"]) < text["dimension"]  # TF-IDF: few of many words
    assert embeddings["image"]["indices"] is None
    model = client.app.state.services.slot.current.model  # the version that answered
    direct = _direct(model, {"designation": fields["designation"]}, photo, tmp_path)
    np.testing.assert_allclose(_vector(text), direct["text"].toarray()[0], atol=1e-6)
    np.testing.assert_allclose(_vector(embeddings["image"]), direct["image"][0], atol=1e-5)
