"""`prodclass experiment cv` on real products: MLflow runs, saved results, the table."""

import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

from prodclass.cli.main import app
from prodclass.settings import get_settings
from prodclass.training.cv import CVResult

runner = CliRunner()
FAST = ["--set", "char_ngram_max=3", "--set", "max_features_char=20000"]


def _run(*args):
    result = runner.invoke(app, list(map(str, args)), env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    return result


def test_cv_then_a_challenger_against_the_saved_result(
    six_codes_prepared, isolated_settings, tmp_path
):
    first = _run(
        "experiment", "cv", "--family", "tfidf-linear", *FAST, "--params",
        '{"calibration_folds": 2}', "--prepared", six_codes_prepared, "--out", tmp_path / "a",
    )  # fmt: skip
    assert "weighted F1 [95 %]" in first.output and "text_only" in first.output
    saved = CVResult.load(tmp_path / "a" / "tfidf-linear")
    assert saved.params["char_ngram_max"] == 3 and saved.params["calibration_folds"] == 2
    assert (tmp_path / "a" / "cv_weighted_f1.png").stat().st_size > 0

    # a crippled challenger, compared with the saved result without refitting it
    second = _run(
        "experiment", "cv", "--family", "tfidf-linear", *FAST, "--set", "C=0.0005",
        "--set", "class_weight=null", "--reference", tmp_path / "a" / "tfidf-linear",
        "--prepared", six_codes_prepared, "--out", tmp_path / "b",
    )  # fmt: skip
    assert "Δ weighted F1 vs tfidf-linear-saved-tfidf-linear" in second.output

    mlflow.set_tracking_uri(get_settings().tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.info.run_name.startswith("cv-")]
    children = [r for r in runs if " fold " in r.info.run_name]
    assert len(parents) == 2
    assert len(children) == 10  # five per fitted candidate; the saved one is not refitted
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {p.info.run_id for p in parents}
    latest = max(parents, key=lambda r: r.info.start_time)
    low = latest.data.metrics["diff_tfidf-linear-saved-tfidf-linear_all_weighted_f1_high"]
    assert low < 0  # the crippled one is worse, and the interval says so
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(latest.info.run_id, "cv")}
    assert "cv/cv_weighted_f1.png" in artifacts and "cv/differences.json" in artifacts
    challenger = CVResult.load(tmp_path / "b" / "tfidf-linear")
    assert np.array_equal(challenger.fold_of, saved.fold_of)  # the same folds


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "C"], "key=value"),
        (["--params", "[1]"], "JSON object"),
        (["--set", "no_such_param=1"], "no_such_param"),
        (["--reference", "tfidf-linear"], "differ"),
    ],
)
def test_bad_options_are_one_sentence(args, message, six_codes_prepared, isolated_settings):
    result = runner.invoke(
        app,
        ["experiment", "cv", "--family", "tfidf-linear", "--prepared", str(six_codes_prepared)]
        + args,
    )
    assert result.exit_code == 1
    assert message in result.output
