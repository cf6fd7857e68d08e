"""The prediction queue with a real model: micro-batches group waiting requests without mixing
their answers (nor their vectors), and one bad product fails only its own request."""

from __future__ import annotations

import numpy as np
import pytest

from prodclass.serving.model_slot import ModelSlot
from prodclass.serving.prediction_queue import PredictionQueue
from prodclass.serving.predictor import InvalidProductError, ProductInput

TITLES = [
    "Piscine gonflable",
    "Console de jeux",
    "Figurine Star Wars",
    "Lot de cartes Pokémon",
    "Livre de cuisine",
    "Jeu de société",
    "Lampe de chevet",
    "Coussin déco",
]


@pytest.fixture(scope="module")
def slot(served) -> ModelSlot:
    slot = ModelSlot()
    slot.request_load(f"models:/{served.settings.registered_model_name}/{served.text_version}")
    assert slot.wait(120).state == "serving"
    return slot


def test_micro_batches_group_requests_and_keep_answers_apart(slot):
    queue = PredictionQueue(slot, workers=1, max_batch_size=8, max_wait_ms=300)
    try:
        futures = [queue.submit([ProductInput(designation=t)], top_k=3) for t in TITLES]
        answers = [f.result(60) for f in futures]
    finally:
        queue.stop()
    assert max(a.batch_size for a in answers) > 1  # grouped into fewer model calls
    alone = slot.current.predict([ProductInput(designation=t) for t in TITLES], top_k=3)
    for answer, expected in zip(answers, alone):
        (prediction,) = answer.predictions
        assert [c.prdtypecode for c in prediction.top] == [c.prdtypecode for c in expected.top]


def test_a_bad_product_fails_only_its_own_request(slot):
    queue = PredictionQueue(slot, workers=1, max_batch_size=8, max_wait_ms=300)
    try:
        good = queue.submit([ProductInput(designation="Console de jeux")], top_k=2)
        bad = queue.submit([ProductInput(image=b"not a photo")], top_k=2)
        also_good = queue.submit([ProductInput(designation="Piscine")], top_k=2)
        assert len(good.result(60).predictions) == 1 and len(also_good.result(60).predictions) == 1
        with pytest.raises(InvalidProductError, match="not an image"):
            bad.result(60)
    finally:
        queue.stop()


def test_a_micro_batch_gives_vectors_only_to_the_request_that_asked(slot):
    queue = PredictionQueue(slot, workers=1, max_batch_size=8, max_wait_ms=300)
    try:
        asked = queue.submit([ProductInput(designation="Piscine gonflable")], top_k=2, embed=True)
        plain = queue.submit([ProductInput(designation="Console de jeux")], top_k=2)
        asked_answer, plain_answer = asked.result(60), plain.result(60)
    finally:
        queue.stop()
    assert asked_answer.batch_size == 2  # one model call answered both
    (with_vectors,), (without,) = asked_answer.predictions, plain_answer.predictions
    assert without.embeddings is None
    (text,) = with_vectors.embeddings  # tfidf-linear: text only, sparse, its own space
    assert text.modality == "text" and text.indices and not text.shared_space
    expected = slot.current.embed([ProductInput(designation="Piscine gonflable")])["text"]
    dense = np.zeros(text.dimension)
    dense[text.indices] = text.values
    np.testing.assert_allclose(dense, expected.toarray()[0], atol=1e-6)
