"""Whole-catalogue scoring (`prodclass predict`, the `catalogue_scoring` Dagster jobs) with a
real tfidf-linear model trained on the six-code products: every product of a challenge CSV
once, in order, answered as the API's predictor answers it; refused products get a reason
and never stop the run; a run stopped by Ctrl-C or a kill continues where it stopped; shards
scored by Dagster and joined give the same file as one run."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tests.servers import start_process, stop_process, tail, wait_for
from typer.testing import CliRunner

from prodclass.cli.main import app
from prodclass.data.layout import ChallengeLayout, read_features, read_labels
from prodclass.data.prepare import load_prepared
from prodclass.data.taxonomy import category
from prodclass.models.registry import create
from prodclass.pipelines.catalogue_scores import CatalogueScoring
from prodclass.pipelines.definitions import defs
from prodclass.pipelines.photo_shards import SHARDS
from prodclass.serving.catalogue_scoring import (
    Source,
    merge_shards,
    score_catalogue,
    work_folder,
)
from prodclass.serving.predictor import Predictor, product_inputs
from prodclass.settings import get_settings

PRODCLASS = [str(Path(sys.executable).with_name("prodclass"))]  # the installed command
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(six_codes_prepared, tmp_path_factory) -> Path:
    """A tfidf-linear model of the six-code products, saved as a folder (a model URI)."""
    model = create("tfidf-linear", {"calibration_folds": 2})
    model.fit(load_prepared(six_codes_prepared))
    return model.save(tmp_path_factory.mktemp("catalogue") / "model")


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor.load(str(model_dir))


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_every_product_once_in_order_as_the_predictor_answers(predictor, six_codes_data, tmp_path):
    source = Source(six_codes_data, "train")
    out = tmp_path / "scores.csv"
    seen: list[int] = []
    result = score_catalogue(predictor, source, out, top_k=3, chunk_size=64, advance=seen.append)
    rows = read(out)
    x = read_features(source.csv)
    assert list(rows["row_id"]) == list(x.index)  # each product once, in the CSV's order
    assert (list(rows["productid"]), list(rows["imageid"])) == (
        list(x["productid"]),
        list(x["imageid"]),
    )
    assert seen == [64, 64, 64, 48] and result.products == 240 and result.refused == 0
    assert not work_folder(out).exists()
    # the same answers as the predictor gives the products directly, photos included
    photos = [
        str(p) if (p := source.photo(pid, iid)).is_file() else ""
        for pid, iid in zip(x["productid"], x["imageid"])
    ]
    direct = predictor.predict(product_inputs(x.assign(image=photos)), top_k=3)
    assert [int(c) for c in rows["code_1"]] == [a.prdtypecode for a in direct]
    assert [float(p) for p in rows["probability_2"]] == [a.top[1].probability for a in direct]
    assert list(rows["inputs"]) == [a.inputs for a in direct]
    assert {"text+image", "text"} <= set(rows["inputs"])
    for rank in (1, 2, 3):  # the catalogue's names of the codes
        names = [category(int(c)).name_fr for c in rows[f"code_{rank}"]]
        assert list(rows[f"name_{rank}"]) == names
    p = rows[["probability_1", "probability_2", "probability_3"]].astype(float)
    assert (p.diff(axis=1).iloc[:, 1:] <= 0).all().all()  # best first
    truth = read_labels(ChallengeLayout(six_codes_data).y_train)["prdtypecode"]
    right = rows["code_1"].to_numpy() == truth.loc[rows["row_id"]].to_numpy()
    with_text = rows["inputs"].str.startswith("text").to_numpy()  # a text model's own products
    assert right[with_text].mean() > 0.9, right[with_text].mean()

    parquet = tmp_path / "scores.parquet"  # the same rows in Parquet, typed
    score_catalogue(predictor, source, parquet, top_k=3, chunk_size=100)
    table = pq.read_table(parquet).to_pandas()
    assert str(table["code_1"].dtype) == "int32" and list(table["row_id"]) == list(x.index)
    assert list(table["code_1"]) == [int(c) for c in rows["code_1"]]


def test_a_refused_product_gets_its_reason_and_the_run_goes_on(predictor, six_codes_data, tmp_path):
    data = Path(shutil.copytree(six_codes_data, tmp_path / "data"))
    layout = ChallengeLayout(data)
    x = read_features(layout.x_train)
    with_photo = [
        r for r in x.index if layout.image_path(x.at[r, "imageid"], x.at[r, "productid"]).is_file()
    ]
    has_text = set(x.index[x["designation"] != ""])
    bad_photo, no_text_bad_photo, odd_ids = [r for r in with_photo if r in has_text][:3]
    for row in (bad_photo, no_text_bad_photo):  # a photo file that is no image
        layout.image_path(x.at[row, "imageid"], x.at[row, "productid"]).write_text("no image")
    x.loc[no_text_bad_photo, ["designation", "description"]] = ""
    nothing = next(r for r in has_text if r not in with_photo)  # no photo on disk: text removed
    x.loc[nothing, ["designation", "description"]] = ""
    x.loc[odd_ids, "imageid"] = "../../X_train_update"  # its photo is not looked up
    x.to_csv(layout.x_train)

    out = tmp_path / "scores.csv"
    result = score_catalogue(predictor, Source(data, "train"), out, chunk_size=50)
    rows = read(out).set_index("row_id")
    assert len(rows) == 240 and result.refused == 2
    assert rows.at[nothing, "error"] == "no title, no description and no photo to classify"
    assert rows.at[no_text_bad_photo, "error"].startswith("photo refused")
    assert rows.loc[[nothing, no_text_bad_photo], "code_1"].eq("").all()
    assert rows.at[bad_photo, "error"] == "" and rows.at[bad_photo, "inputs"] == "text"
    assert rows.at[bad_photo, "warning"].endswith("scored on the text alone")
    assert rows.at[odd_ids, "warning"].startswith("productid and imageid are not numbers")
    assert rows.at[odd_ids, "code_1"] != "" and rows.at[odd_ids, "inputs"] == "text"
    assert (rows.drop([nothing, no_text_bad_photo])["code_1"] != "").all()


def test_the_submission_is_laid_out_as_y_train(predictor, six_codes_data, tmp_path):
    out = tmp_path / "submission.csv"
    score_catalogue(predictor, Source(six_codes_data, "test"), out, submission=True)
    x = read_features(ChallengeLayout(six_codes_data).x_test)
    assert out.read_text().splitlines()[0] == ",prdtypecode"  # Y_train_CVw08PX.csv's header
    answers = read_labels(out)  # read as the challenge's labels are
    assert list(answers.index) == list(x.index) and list(answers.columns) == ["prdtypecode"]
    nothing = (x["designation"] == "") & (x["description"] == "")  # no test photo is here
    assert (answers["prdtypecode"] == "").tolist() == nothing.tolist()
    assert set(answers["prdtypecode"][~nothing]) <= set(predictor.model.classes_.astype(str))


def test_bad_options_get_one_sentence(model_dir, six_codes_data, tmp_path, isolated_settings):
    base = ["predict", "--data", str(six_codes_data), "--model", str(model_dir)]
    cases = {
        "--out must end in .csv or .parquet": [*base, "--out", str(tmp_path / "x.txt")],
        "part must be one of train, test": [*base, "--part", "val",
                                            "--out", str(tmp_path / "a.csv")],
        "no X_test_update.csv": ["predict", "--data", str(tmp_path), "--model", str(model_dir),
                                 "--out", str(tmp_path / "b.csv")],
        "submission format is a CSV": [*base, "--submission", "--out", str(tmp_path / "c.parquet")],
    }  # fmt: skip
    for said, args in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert said.split(" ", 1)[1] in " ".join(result.output.split()), result.output


def _parts(out: Path) -> int:
    return len(list(work_folder(out).glob("part-*.parquet")))


def test_a_stopped_run_continues_where_it_stopped(
    model_dir, predictor, six_codes_data, tmp_path, isolated_settings
):
    """A real `prodclass predict` interrupted by Ctrl-C (SIGINT), run again and killed
    (SIGKILL), then run to the end: the file equals one uninterrupted run's."""
    out = tmp_path / "scores.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODCLASS_")}
    env |= {"PRODCLASS_STATE_DIR": str(isolated_settings), "PRODCLASS_LOG_LEVEL": "WARNING"}
    command = [*PRODCLASS, "predict", "--data", str(six_codes_data), "--out", str(out),
               "--model", str(model_dir), "--chunk-size", "5"]  # fmt: skip
    left = 0
    for stop in (signal.SIGINT, signal.SIGKILL):
        log = tmp_path / f"run-{stop.name}.log"
        process = start_process(command, log, env=env)
        try:
            wait_for(
                lambda n=left, p=process: _parts(out) > n or p.poll() is not None,
                "a chunk scored",
                timeout=120,
                every=0.01,
                detail=lambda f=log: tail(f),
            )
            assert process.poll() is None, f"the run ended before it was stopped:\n{tail(log)}"
            os.kill(process.pid, stop)
            code = process.wait(60)
        finally:
            stop_process(process)
        assert not out.exists(), tail(log)
        assert _parts(out) > left, "the second run scored nothing new"
        left = _parts(out)
        if stop is signal.SIGINT:  # Ctrl-C: a clean stop that says how to go on
            assert code == 130, tail(log)
            assert "run the same command again to continue" in " ".join(log.read_text().split())
    assert left < 98  # 490 products in chunks of 5: stopped before the end

    # the last run: in this process, the model from the settings (no --model)
    os.environ["PRODCLASS_MODEL_URI"] = str(model_dir)
    get_settings.cache_clear()
    try:
        result = runner.invoke(
            app, ["predict", "--data", str(six_codes_data), "--out", str(out), "--chunk-size", "5"]
        )
    finally:
        del os.environ["PRODCLASS_MODEL_URI"]
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert f"{left} chunks from an earlier run" in result.output
    assert not work_folder(out).exists()
    whole = tmp_path / "whole.csv"
    score_catalogue(predictor, Source(six_codes_data, "test"), whole, chunk_size=256)
    assert out.read_bytes() == whole.read_bytes()

    again = runner.invoke(app, ["predict", "--data", str(six_codes_data), "--out", str(out),
                                "--model", str(model_dir)])  # fmt: skip
    assert again.exit_code == 1 and "exists and is complete" in again.output


def test_a_run_is_not_continued_with_other_options(
    model_dir, predictor, six_codes_data, tmp_path, isolated_settings
):
    out = tmp_path / "scores.csv"
    args = ["predict", "--data", str(six_codes_data), "--out", str(out), "--model", str(model_dir)]

    class Stop(Exception):
        pass

    def stop_after_first(n: int) -> None:
        raise Stop

    with pytest.raises(Stop):  # a first run with --top-k 3 stopped after its first chunk
        score_catalogue(predictor, Source(six_codes_data, "test"), out, advance=stop_after_first)
    result = runner.invoke(app, [*args, "--top-k", "2"])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "top_k 3 (this run: 2)" in said and "remove" in said, said
    assert runner.invoke(app, args).exit_code == 0 and not work_folder(out).exists()

    other = tmp_path / "other.csv"  # a work folder that is not this command's
    work_folder(other).mkdir()
    (work_folder(other) / "manifest.json").write_text("{not json")
    result = runner.invoke(app, [*args[:-4], "--out", str(other), "--model", str(model_dir)])
    assert result.exit_code == 1 and "is not a manifest of `prodclass predict`" in result.output


def test_dagster_scores_each_shard_and_joins_them_as_one_run(
    model_dir, predictor, six_codes_data, tmp_path
):
    resource = CatalogueScoring(
        data_dir=str(six_codes_data),
        part="train",
        model_uri=str(model_dir),
        out_dir=str(tmp_path / "shards"),
        output=str(tmp_path / "joined.csv"),
        chunk_size=50,
    )
    instance = dg.DagsterInstance.ephemeral()
    scoring = defs.resolve_job_def("catalogue_scoring")
    merge = defs.resolve_job_def("catalogue_scoring_merge")
    resources = {"catalogue_scoring": resource}
    counts = {}
    for shard in range(SHARDS):
        run = scoring.execute_in_process(
            partition_key=str(shard), resources=resources, instance=instance
        )
        assert run.success
        counts[shard] = pq.read_metadata(resource.shard_file(shard)).num_rows
        if shard == 1:  # two shards scored: the join refuses, naming the others
            early = merge.execute_in_process(
                resources=resources, instance=instance, raise_on_error=False
            )
            assert not early.success
            (failure,) = [e for e in early.all_events if e.is_step_failure]
            said = failure.step_failure_data.error.message
            assert "shards [2, 3, 4, 5, 6, 7] of 8 are not scored yet" in said, said
    assert sum(counts.values()) == 240 and min(counts.values()) > 0
    assert merge.execute_in_process(resources=resources, instance=instance).success
    whole = tmp_path / "whole.csv"
    score_catalogue(predictor, Source(six_codes_data, "train"), whole, chunk_size=64)
    assert resource.merged_file().read_bytes() == whole.read_bytes()


def test_shards_of_another_model_are_not_joined(predictor, six_codes_data, tmp_path):
    source = Source(six_codes_data, "train")
    files = []
    for shard in (0, 1):
        files.append(tmp_path / f"shard-{shard}.parquet")
        score_catalogue(predictor, source, files[-1], shard=(shard, 2))
    other = Predictor.load(str(shutil.copytree(predictor.model_dir, tmp_path / "other-model")))
    files.append(tmp_path / "shard-1-other.parquet")
    score_catalogue(other, source, files[-1], shard=(1, 2))
    joined = tmp_path / "joined.parquet"
    assert merge_shards(files[:2], joined)[0] == 240
    with pytest.raises(ValueError, match="differs from the other shards in model_uri"):
        merge_shards([files[0], files[2]], joined)
    with pytest.raises(ValueError, match=r"shards \[1\] of 2 are missing"):
        merge_shards(files[:1], joined)
