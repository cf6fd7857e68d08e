"""`prodclass tune`: each trial cross-validated on every labelled product (same folds for every
trial, pruned between folds), trials as nested MLflow runs, best values merged into params.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from tests.conftest import PROJECT_ROOT
from typer.testing import CliRunner

from prodclass.cli.main import app
from prodclass.data.prepare import PRODUCTS_FILE, load_prepared
from prodclass.params import load_params
from prodclass.training.cv import FoldFacts, cross_validate, score
from prodclass.training.tune import SEARCH_SPACES, CVObjective, FoldPruner, make_study

runner = CliRunner()

FAMILY = "tfidf-linear"
N_PRODUCTS = 1200  # enough products per class for each fold's calibration folds
CV_SEED = 42  # the split seed of the project's params.yaml: the folds the tuner uses
# A second family block, hand-written with a comment, that tuning tfidf-linear must not touch.
OTHER_BLOCK = "  text-lstm:\n    hidden: 64  # hand-picked, keep\n"
# Word n-grams only: the same search at a fraction of the fitting time.
FAST = "    analyzers: word\n"


@pytest.fixture(scope="module")
def prepared(sample_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real sample, validated and split, cut to a stratified subset of real products; its
    validation rows are moved to the test split, so a tuner that read the validation split
    would find nothing there."""
    from prodclass.data.split import stratified_subset

    out = tmp_path_factory.mktemp("tune") / "prepared"
    shutil.copytree(sample_prepared, out)
    products = pd.read_csv(out / PRODUCTS_FILE, index_col=0, dtype=str, keep_default_na=False)
    # another seed than the split's: its lowest hashes are the test split
    products = stratified_subset(products, N_PRODUCTS, seed=0)
    products["split"] = products["split"].replace("val", "test")
    products.to_csv(out / PRODUCTS_FILE)
    assert set(load_prepared(out)["split"]) == {"train", "test"}
    return out


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """A copy of the project's params.yaml with one more family block, tfidf-linear on words."""
    text = (PROJECT_ROOT / "params.yaml").read_text()
    assert "\n  text-lstm:" not in text and "\npromotion:" in text
    text = text.replace("\npromotion:", "\n" + OTHER_BLOCK.rstrip("\n") + "\npromotion:", 1)
    # a quoted "off" in another family (YAML 1.1 reads a bare off as false): kept as it is
    assert "\n    ocr: photo_only\n" in text
    text = text.replace("\n    ocr: photo_only\n", '\n    ocr: "off"\n', 1)
    block = f"\n  {FAMILY}:\n"
    assert block in text
    text = text.replace(block, block + FAST, 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).family_params(FAMILY)["analyzers"] == "word"
    return path


def _tune(*args: object):
    return runner.invoke(app, ["tune", *map(str, args)])


def _outside_family_block(text: str, family: str) -> list[str]:
    """Every line of params.yaml except those of ``families.<family>``."""
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if line == f"  {family}:":
            inside = True
            continue
        if inside and not line.startswith("    "):
            inside = False
        if not inside:
            out.append(line)
    return out


@pytest.mark.slow  # cross-validates tfidf-linear once per trial
def test_trials_are_cross_validated_child_runs_and_best_params_are_written(
    isolated_settings: Path, prepared: Path, params_file: Path
) -> None:
    before = params_file.read_text()
    result = _tune(
        "--trials", 3, "--folds", 3, "--model-family", FAMILY, "--prepared", prepared,
        "--params", params_file,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "params written to" in result.output
    products = load_prepared(prepared)
    assert "3-fold CV weighted F1" in result.output
    assert f"on {len(products)} products" in result.output

    from prodclass.registry.tracking import configure_mlflow
    from prodclass.settings import get_settings

    configure_mlflow(get_settings())
    parents = mlflow.search_runs(
        filter_string=f"tags.mlflow.runName = 'tune-{FAMILY}'", output_format="list"
    )
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id in result.output
    # every labelled product, whatever its split; the folds of the train stage's seed
    assert parent.data.params["n_products"] == str(len(products))
    assert parent.data.params["cv_folds"] == "3"
    assert parent.data.params["cv_seed"] == str(CV_SEED)
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list"
    )
    assert len(children) == 3  # the pruner waits for 3 finished trials: none is stopped
    assert {c.info.status for c in children} == {"FINISHED"}
    client = mlflow.MlflowClient()
    for child in children:
        metrics = child.data.metrics
        assert 0 < metrics["cv_all_weighted_f1_low"] <= metrics["cv_all_weighted_f1"]
        assert metrics["cv_all_weighted_f1"] <= metrics["cv_all_weighted_f1_high"] <= 1
        assert not any(key.startswith("val_") for key in metrics)
        folds = client.get_metric_history(child.info.run_id, "fold_weighted_f1")
        running = client.get_metric_history(child.info.run_id, "running_weighted_f1")
        assert sorted(m.step for m in folds) == [0, 1, 2]
        fold_scores = [m.value for m in sorted(folds, key=lambda m: m.step)]
        last = max(running, key=lambda m: m.step)
        assert last.value == pytest.approx(sum(fold_scores) / 3)
        # searched values are logged, unsearched ones come from params.yaml
        assert {"C", "char_ngram_max", "word_ngram_max", "classifier"} <= set(child.data.params)
        assert child.data.params["class_weight"] == "balanced"
        assert child.data.params["analyzers"] == "word"
    best = max(children, key=lambda c: c.data.metrics["cv_all_weighted_f1"])
    for suffix in ("", "_low", "_high"):
        key = f"cv_all_weighted_f1{suffix}"
        assert parent.data.metrics[f"best_{key}"] == best.data.metrics[key]
    assert parent.data.tags["best_run_id"] == best.info.run_id

    # params.yaml: the best child's searched values, everything else as it was
    after = params_file.read_text()
    tuned = load_params(params_file).family_params(FAMILY)
    assert tuned["C"] == pytest.approx(float(best.data.params["C"]))
    for key in ("char_ngram_max", "word_ngram_max", "classifier"):
        assert str(tuned[key]) == best.data.params[key]
    assert tuned["class_weight"] == "balanced" and tuned["char_ngram_min"] == 2
    assert _outside_family_block(after, FAMILY) == _outside_family_block(before, FAMILY)
    assert 'ocr: "off"' in after  # quoting kept: a bare off would read as false
    assert "# hand-picked, keep" in after and after.startswith("# Parameters of the DVC")
    others_before = {k: v for k, v in yaml.safe_load(before)["families"].items() if k != FAMILY}
    others_after = {k: v for k, v in yaml.safe_load(after)["families"].items() if k != FAMILY}
    assert others_after == others_before and "text-lstm" in others_after

    # the objective is the project's cross-validation: the written params, cross-validated
    # again on every product with the same folds, score what the search logged
    again = score(cross_validate(products, FAMILY, tuned, folds=3, seed=CV_SEED))["all"]
    assert again.weighted_f1.mean == best.data.metrics["cv_all_weighted_f1"]
    assert again.weighted_f1.low == best.data.metrics["cv_all_weighted_f1_low"]


@pytest.mark.slow  # trains tfidf-linear once per trial
def test_no_write_params_leaves_the_file_byte_identical(
    isolated_settings: Path, prepared: Path, params_file: Path
) -> None:
    before = params_file.read_bytes()
    result = _tune(
        "--trials",
        1,
        "--folds",
        2,
        "--model-family",
        FAMILY,
        "--prepared",
        prepared,
        "--params",
        params_file,
        "--no-write-params",
    )
    assert result.exit_code == 0, result.output
    assert "params not written" in result.output
    assert params_file.read_bytes() == before


def test_unknown_family_is_a_one_line_error(
    isolated_settings: Path, prepared: Path, params_file: Path
) -> None:
    before = params_file.read_bytes()
    result = _tune(
        "--trials",
        1,
        "--model-family",
        "no-such-family",
        "--prepared",
        prepared,
        "--params",
        params_file,
    )
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "no search space for model family 'no-such-family'" in errors[0]
    assert FAMILY in errors[0]  # names what can be tuned
    assert "Traceback" not in result.output
    assert params_file.read_bytes() == before


def _facts(fold: int, weighted_f1: float) -> FoldFacts:
    return FoldFacts(fold, 800, 0, 400, 0.1, 0.01, None, {"weighted_f1": weighted_f1})


def test_fold_pruner_reports_the_running_mean_and_prunes_between_folds() -> None:
    """Our callback + our study configuration: the running mean of the fold scores at step =
    fold index; a trial below the median is stopped after any fold but the last."""
    study = make_study(seed=0)
    folds = [0.60, 0.70, 0.80]
    for _ in range(3):  # the pruner's startup trials
        pruner = FoldPruner(study.ask(), folds=3)
        for fold, f1 in enumerate(folds):
            pruner(_facts(fold, f1))
        study.tell(pruner.trial, 0.70)
    assert study.trials[0].intermediate_values == pytest.approx({0: 0.60, 1: 0.65, 2: 0.70})

    good = FoldPruner(study.ask(), folds=3)
    for fold, f1 in enumerate([0.61, 0.70, 0.80]):
        good(_facts(fold, f1))  # at or above the median: never stopped
    study.tell(good.trial, 0.70)

    bad = FoldPruner(study.ask(), folds=3)
    with pytest.raises(optuna.TrialPruned, match="after fold 0"):
        bad(_facts(0, 0.10))
    assert bad.reported == [(0, 0.10)]
    study.tell(bad.trial, state=optuna.trial.TrialState.PRUNED)

    late = FoldPruner(study.ask(), folds=3)
    late(_facts(0, 0.60))
    with pytest.raises(optuna.TrialPruned, match="after fold 1"):
        late(_facts(1, 0.30))  # running mean 0.45 < 0.65
    study.tell(late.trial, state=optuna.trial.TrialState.PRUNED)

    last = FoldPruner(study.ask(), folds=2)  # a 2-fold trial: its last fold is never judged
    last(_facts(0, 0.60))
    last(_facts(1, 0.05))
    assert last.reported == [(0, 0.60), (1, pytest.approx(0.325))]


@pytest.mark.slow  # cross-validates tfidf-linear four times, and one fold of a fifth trial
def test_a_losing_trial_is_stopped_after_its_first_fold(
    isolated_settings: Path, prepared: Path
) -> None:
    """The real objective: a trial whose first fold scores below the median of earlier trials
    on the same fold is pruned there, its MLflow run killed; an equal trial runs to the end."""
    from prodclass.registry.tracking import configure_mlflow
    from prodclass.settings import get_settings

    configure_mlflow(get_settings())
    products = load_prepared(prepared)
    objective = CVObjective(products, FAMILY, {"analyzers": "word"}, folds=3, cv_seed=CV_SEED)
    good = {"C": 1.0, "char_ngram_max": 5, "word_ngram_max": 1, "classifier": "linear_svc"}
    weak = {"C": 0.01, "char_ngram_max": 5, "word_ngram_max": 1, "classifier": "logreg"}
    study = make_study(seed=0)
    for values in [good, good, good, weak, good]:
        study.enqueue_trial(values)
    with mlflow.start_run(run_name="tune-test"):
        study.optimize(objective, n_trials=5)

    states = [t.state for t in study.trials]
    complete, pruned = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    assert states == [complete, complete, complete, pruned, complete]
    weak_trial = study.trials[3]
    assert list(weak_trial.intermediate_values) == [0]
    for trial in study.trials[:3] + study.trials[4:]:
        assert list(trial.intermediate_values) == [0, 1, 2]
        assert weak_trial.intermediate_values[0] < trial.intermediate_values[0]
        # same params, same folds: the same score
        assert trial.value == study.trials[0].value

    client = mlflow.MlflowClient()
    run = client.get_run(weak_trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["optuna_state"] == "pruned"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "running_weighted_f1")] == [
        0
    ]
    assert "cv_all_weighted_f1" not in run.data.metrics
    finished = client.get_run(study.trials[4].user_attrs["mlflow_run_id"])
    assert finished.info.status == "FINISHED"
    assert finished.data.metrics["cv_all_weighted_f1"] == study.trials[4].value


def test_every_search_space_names_real_params_of_its_family() -> None:
    """A typo in a space would only surface mid-search; every proposal must build the family."""
    from prodclass.models.registry import family_class

    for family, space in SEARCH_SPACES.items():
        cls = family_class(family)
        sampler = optuna.samplers.RandomSampler(seed=0)
        study = optuna.create_study(sampler=sampler)
        for _ in range(5):
            proposed = space(study.ask())
            assert set(proposed) <= set(cls.Params.model_fields), family
            cls.Params(**proposed)


def test_write_family_params_checks_values_and_leaves_no_temp_file(params_file: Path) -> None:
    from prodclass.training.tune import write_family_params

    write_family_params(params_file, FAMILY, {"C": 2.0})
    assert load_params(params_file).family_params(FAMILY)["C"] == 2.0
    assert [p.name for p in params_file.parent.iterdir()] == ["params.yaml"]
    with pytest.raises(ValueError):
        write_family_params(params_file, FAMILY, {"no_such_param": 1})
    assert load_params(params_file).family_params(FAMILY)["C"] == 2.0
    assert [p.name for p in params_file.parent.iterdir()] == ["params.yaml"]
