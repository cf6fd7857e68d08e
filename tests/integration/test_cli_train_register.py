"""The CLI end to end on the embedded stores: train, evaluate, register, promote, roll back."""

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from prodclass.cli.main import app

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained_twice(sample, six_codes_prepared, tmp_path_factory):
    """Two cross-validated and refitted candidates (different C) on real products of six
    types, in one isolated state folder."""
    root = tmp_path_factory.mktemp("cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("PRODCLASS_STATE_DIR", str(root / "state"))
    mp.setenv("PRODCLASS_DATA_DIR", str(sample))
    mp.delenv("PRODCLASS_MLFLOW_TRACKING_URI", raising=False)
    from prodclass.settings import get_settings

    get_settings.cache_clear()
    shutil.copytree(six_codes_prepared, root / "prepared")
    fast = "char_ngram_max: 3\n    max_features_char: 20000\n    calibration_folds: 2\n"
    weak = root / "weak.yaml"
    weak.write_text(
        "train:\n  model_family: tfidf-linear\n"
        f"families:\n  tfidf-linear:\n    C: 0.0005\n    class_weight: null\n    {fast}"
    )
    strong = root / "strong.yaml"  # the registry, not the model, is under test: fast family
    strong.write_text(
        f"train:\n  model_family: tfidf-linear\nfamilies:\n  tfidf-linear:\n    {fast}"
    )
    candidates = []
    for name, params in (("strong", strong), ("weak", weak)):
        args = [
            "train",
            "--prepared",
            root / "prepared",
            "--out",
            root / name,
            "--report",
            root / f"{name}.json",
        ]
        _run(*args, "--params", params)
        _run(
            "evaluate",
            "--cv",
            "--model",
            root / name,
            "--train-report",
            root / f"{name}.json",
            "--out",
            root / f"{name}-test.json",
        )
        candidates.append(name)
    yield root
    mp.undo()
    get_settings.cache_clear()


def _register(root, name):
    _run(
        "models",
        "register",
        "--train-report",
        root / f"{name}.json",
        "--evaluation",
        root / f"{name}-test.json",
        "--prepared",
        root / "prepared",
        "--out",
        root / f"{name}-reg.json",
    )
    return json.loads((root / f"{name}-reg.json").read_text())


def test_register_promotes_only_a_better_model_and_rollback_restores(trained_twice):
    root = trained_twice
    first = _register(root, "strong")
    assert first["promoted"] and first["version"] == "1"
    second = _register(root, "weak")
    assert not second["promoted"]
    assert second["champion_weighted_f1"] > second["candidate_weighted_f1"]

    assert second["difference_high"] < 0 and second["n_compared"] > 0  # clearly worse
    assert "lower bound is not above 0.0" in second["reason"]
    import mlflow

    weak_run = json.loads((root / "weak.json").read_text())["run_id"]
    assert mlflow.get_run(weak_run).data.tags["promotion_decision"] == "not promoted"
    record = mlflow.artifacts.load_dict(f"runs:/{weak_run}/reports/promotion.json")
    assert record["difference_low"] == second["difference_low"]
    assert min(row["f1_change"] for row in record["per_class_changes"].values()) < 0

    assert (first["alias"], second["alias"]) == ("champion", "challenger")
    assert second["previous_challenger"] is None

    assert _aliases() == [("2", ["challenger"]), ("1", ["champion"])]
    listing = json.loads(_run("models", "list", "--json").stdout)
    assert listing[1]["weighted_f1"] == str(first["candidate_weighted_f1"])

    _run("models", "promote", "2")  # the challenger wins by hand: it is no longer challenger
    assert _aliases() == [("2", ["champion"]), ("1", [])]
    report = json.loads(
        _run("evaluate", "--cv", "--model", "models:/prodclass@champion").stdout.split("\nn=")[0]
    )
    assert report["weighted_f1"] == second["candidate_weighted_f1"]

    out = _run("models", "rollback").output
    assert "from version 2 to version 1" in out
    again = runner.invoke(app, ["models", "rollback"])
    assert again.exit_code == 1 and "no previous champion" in again.output


def _aliases():
    listing = json.loads(_run("models", "list", "--json").stdout)
    return [(v["version"], v["aliases"]) for v in listing]


def test_each_losing_candidate_takes_the_challenger_alias_from_the_previous_one(trained_twice):
    root = trained_twice
    if not any("champion" in aliases for _, aliases in _aliases()):  # when run on its own
        _register(root, "strong")
    champion = next(v for v, aliases in _aliases() if "champion" in aliases)

    weak = _register(root, "weak")
    assert not weak["promoted"] and weak["alias"] == "challenger"
    # the same model again: equal F1 does not beat the champion, so it challenges too
    strong_again = _register(root, "strong")
    assert not strong_again["promoted"], strong_again["reason"]
    assert strong_again["previous_challenger"] == weak["version"]

    aliases = dict(_aliases())
    assert aliases[strong_again["version"]] == ["challenger"]
    assert aliases[weak["version"]] == []
    assert aliases[champion] == ["champion"]
    assert sum(a.count("challenger") for a in aliases.values()) == 1
    challenger = json.loads(
        _run("evaluate", "--cv", "--model", "models:/prodclass@challenger").stdout.split("\nn=")[0]
    )
    assert challenger["weighted_f1"] == strong_again["candidate_weighted_f1"]


def test_evaluate_scores_every_labelled_row_of_a_folder(trained_twice, sample, tmp_path):
    out = tmp_path / "report.json"
    _run("evaluate", "--data", sample, "--model", "models:/prodclass@champion", "--out", out)
    report = json.loads(out.read_text())
    labelled = len(pd.read_csv(sample / "Y_train_CVw08PX.csv"))
    assert report["n"] == labelled
    assert report["model_uri"] == "models:/prodclass@champion"
    for key in ("accuracy", "weighted_f1", "macro_f1"):
        assert 0 < report[key] <= 1
    assert set(report["per_class"]) == {
        str(c) for c in __import__("prodclass.data.taxonomy", fromlist=["CODES"]).CODES
    }
    assert {"precision", "recall", "f1", "support"} <= set(report["per_class"]["2583"])
    assert sum(c["support"] for c in report["per_class"].values()) == labelled
    assert set(report["by_modality"]) == {"text_only", "image_only", "both"}


def report_n(root) -> int:
    return json.loads((root / "strong-test.json").read_text())["n"]


def test_training_logs_params_metrics_and_artifacts_to_mlflow(trained_twice):
    import mlflow

    from prodclass.registry.tracking import configure_mlflow
    from prodclass.settings import get_settings

    configure_mlflow(get_settings())
    run_id = json.loads((trained_twice / "strong.json").read_text())["run_id"]
    run = mlflow.get_run(run_id)
    assert run.data.params["model_family"] == "tfidf-linear"
    metrics = run.data.metrics
    for subset in ("all", "text_only", "image_only", "both"):
        low, mean, high = (
            metrics[f"cv_{subset}_weighted_f1{end}"] for end in ("_low", "", "_high")
        )
        assert 0 <= low <= mean <= high <= 1
    assert 0 <= metrics["cv_ece"] <= 1
    for batch in ("batch_1", "batch_32"):
        p50, p95 = (metrics[f"refit_latency_{batch}_{q}_ms"] for q in ("p50", "p95"))
        assert 0 < p50 <= p95
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "reports")}
    assert "reports/cv_metrics.json" in artifacts
    # the out-of-fold report and its figures, as the web app's Models page reads them
    for figure in ("test_metrics.json", "confusion_matrix.png", "reliability_diagram.png"):
        assert f"reports/{figure}" in artifacts
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/reports/test_metrics.json"))
    assert logged["split"] == "out-of-fold" and logged["n"] == report_n(trained_twice)
    folds = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        output_format="list",
    )
    assert sorted(r.data.tags["fold"] for r in folds) == ["0", "1", "2", "3", "4"]
    report = json.loads((trained_twice / "strong-test.json").read_text())
    assert report["ece"] == metrics["cv_ece"]
    assert report["weighted_f1"] == metrics["cv_all_weighted_f1"]
    assert set(report["cv"]["scores"]) == {"all", "text_only", "image_only", "both"}


def test_unknown_model_uri_is_a_clear_error(trained_twice):
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            "models:/prodclass/99",
            "--prepared",
            str(trained_twice / "prepared"),
        ],
    )
    assert result.exit_code == 1
    assert "cannot load model models:/prodclass/99" in result.output
