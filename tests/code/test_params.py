import pytest
from tests.conftest import PROJECT_ROOT

from prodclass.models.registry import UnknownFamilyError, create
from prodclass.params import ParamsError, load_params


def test_project_params_file_loads():
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.train.model_family == "late-fusion"  # what make demo trains
    create(params.train.model_family, params.family_params(params.train.model_family))


def test_unknown_section_key_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  val_size: 0.1\n  tset_size: 0.2\n")
    with pytest.raises(ParamsError, match="tset_size"):
        load_params(path)


def test_wrong_type_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  val_size: lots\n")
    with pytest.raises(ParamsError, match="val_size"):
        load_params(path)


def test_family_params_are_checked():
    with pytest.raises(ValueError, match="ngram"):
        create("tfidf-linear", {"ngram": 3})
    with pytest.raises(ValueError, match="classifier"):
        create("tfidf-linear", {"classifier": "random-forest"})


def test_unknown_family_names_the_known_ones():
    with pytest.raises(UnknownFamilyError, match="tfidf-linear"):
        create("gpt-9", {})
