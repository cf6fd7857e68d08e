"""`prodclass tune`: Optuna trials as nested MLflow runs, best values merged into params.yaml."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from tests.conftest import PROJECT_ROOT
from typer.testing import CliRunner

from prodclass.cli.main import app
from prodclass.params import load_params
from prodclass.training.tune import SEARCH_SPACES, PruningCallback, make_study

runner = CliRunner()

FAMILY = "tfidf-linear"
# A second family block, hand-written with a comment, that tuning tfidf-linear must not touch.
OTHER_BLOCK = "  text-lstm:\n    hidden: 64  # hand-picked, keep\n"


@pytest.fixture(scope="module")
def prepared(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real sample, validated and split once for the module."""
    from prodclass.data.prepare import SplitParams, prepare
    from prodclass.data.validate import validate

    out = tmp_path_factory.mktemp("tune") / "prepared"
    prepare(validate(sample, workers=2), out, SplitParams())
    return out


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """A copy of the project's params.yaml with one more family block."""
    text = (PROJECT_ROOT / "params.yaml").read_text()
    if "\n  text-lstm:" not in text:
        assert "\npromotion:" in text
        text = text.replace("\npromotion:", "\n" + OTHER_BLOCK.rstrip("\n") + "\npromotion:", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
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


@pytest.mark.slow  # trains tfidf-linear once per trial
def test_trials_are_child_runs_of_one_parent_and_best_params_are_written(
    isolated_settings: Path, prepared: Path, params_file: Path
) -> None:
    before = params_file.read_text()
    result = _tune(
        "--trials", 3, "--model-family", FAMILY, "--prepared", prepared, "--params", params_file
    )
    assert result.exit_code == 0, result.output
    assert "params written to" in result.output

    from prodclass.registry.tracking import configure_mlflow
    from prodclass.settings import get_settings

    configure_mlflow(get_settings())
    parents = mlflow.search_runs(
        filter_string=f"tags.mlflow.runName = 'tune-{FAMILY}'", output_format="list"
    )
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id in result.output
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list"
    )
    assert len(children) == 3
    assert {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        assert 0 < child.data.metrics["val_weighted_f1"] <= 1
        # searched values are logged, unsearched ones come from params.yaml
        assert {"C", "char_ngram_max", "word_ngram_max", "classifier"} <= set(child.data.params)
        assert child.data.params["class_weight"] == "balanced"
    best = max(children, key=lambda c: c.data.metrics["val_weighted_f1"])
    assert parent.data.metrics["best_val_weighted_f1"] == best.data.metrics["val_weighted_f1"]
    assert parent.data.tags["best_run_id"] == best.info.run_id

    # params.yaml: the best child's searched values, everything else as it was
    after = params_file.read_text()
    tuned = load_params(params_file).family_params(FAMILY)
    assert tuned["C"] == pytest.approx(float(best.data.params["C"]))
    for key in ("char_ngram_max", "word_ngram_max", "classifier"):
        assert str(tuned[key]) == best.data.params[key]
    assert tuned["class_weight"] == "balanced" and tuned["char_ngram_min"] == 2
    assert _outside_family_block(after, FAMILY) == _outside_family_block(before, FAMILY)
    assert "# hand-picked, keep" in after and after.startswith("# Parameters of the DVC")
    others_before = {k: v for k, v in yaml.safe_load(before)["families"].items() if k != FAMILY}
    others_after = {k: v for k, v in yaml.safe_load(after)["families"].items() if k != FAMILY}
    assert others_after == others_before and "text-lstm" in others_after


@pytest.mark.slow  # trains tfidf-linear once per trial
def test_no_write_params_leaves_the_file_byte_identical(
    isolated_settings: Path, prepared: Path, params_file: Path
) -> None:
    before = params_file.read_bytes()
    result = _tune(
        "--trials",
        1,
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


def test_pruning_callback_raises_when_the_median_pruner_says_so() -> None:
    """Our callback + our study configuration: prune below the median, not during warm-up."""
    study = make_study(seed=0)
    curve = [0.30, 0.50, 0.60, 0.70]
    for _ in range(3):  # the pruner's startup trials
        trial = study.ask()
        callback = PruningCallback(trial)
        for epoch, f1 in enumerate(curve, start=1):
            callback(epoch, f1)
        study.tell(trial, curve[-1])

    good = PruningCallback(study.ask())
    for epoch, f1 in enumerate([0.31, 0.52, 0.61, 0.72], start=1):
        good(epoch, f1)  # at or above the median: never stopped
    study.tell(good.trial, 0.72)

    bad = PruningCallback(study.ask())
    bad(1, 0.05)  # far below, but still in the warm-up epochs
    bad(2, 0.05)
    with pytest.raises(optuna.TrialPruned, match="after epoch 3"):
        bad(3, 0.05)
    assert bad.reported == [(1, 0.05), (2, 0.05), (3, 0.05)]


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
