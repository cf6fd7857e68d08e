"""What DVC hashes names no machine: the data stages (ingest, validate, prepare, reviewed
products included) run in two clones at different places on the disk, each given the data
folder relative to its root as the default setting is, write byte-identical outputs; and the
prepared folder finds its photos from wherever it is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.conftest import copy_subset

from prodclass.data.ingest import write_snapshot
from prodclass.data.prepare import SplitParams, load_prepared, prepare
from prodclass.data.validate import validate

DATA = Path("../shared/data/sample")  # relative to a clone's root, as the default setting
OUTPUTS = ("data/snapshot.json", "reports/validation.json", "data/prepared")


def _clone(root: Path, data: Path, feedback: Path) -> Path:
    """A clone's root beside a shared data folder, with reviewed products in data/feedback."""
    main = root / "main"
    (root / "shared" / "data").mkdir(parents=True)
    (root / "shared" / "data" / "sample").symlink_to(data)
    (main / "data").mkdir(parents=True)
    (main / "data" / "feedback").symlink_to(feedback)
    return main


def _data_stages(main: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ingest, validate and prepare (with the reviewed products) as their stages run them:
    in the clone's root, on the data folder as given."""
    monkeypatch.chdir(main)
    write_snapshot(DATA, Path("data/snapshot.json"))
    validated = validate(DATA)
    validated.report.write(Path("reports/validation.json"))
    extra = validate(Path("data/feedback"))
    prepare(validated, Path("data/prepared"), SplitParams(), extra_train=extra)


def _files(main: Path) -> dict[str, bytes]:
    found = {}
    for name in OUTPUTS:
        path = main / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        found |= {str(f.relative_to(main)): f.read_bytes() for f in files if f.is_file()}
    return found


def test_the_data_stages_write_the_same_bytes_in_every_clone(sample, tmp_path, monkeypatch):
    data = copy_subset(sample, tmp_path / "subset", per_modality=6)
    feedback = copy_subset(sample, tmp_path / "feedback", per_modality=2)
    first = _clone(tmp_path / "here", data, feedback)
    second = _clone(tmp_path / "somewhere" / "else" / "entirely", data, feedback)
    for main in (first, second):
        _data_stages(main, monkeypatch)

    mine, theirs = _files(first), _files(second)
    assert len(mine) == 4 and mine.keys() == theirs.keys()
    for name, content in mine.items():
        assert content == theirs[name], name
        for place in (str(tmp_path), str(sample), str(data), str(feedback)):
            assert place.encode() not in content, (name, place)

    # read back from elsewhere: every photo of the data and of the reviewed products found
    monkeypatch.chdir(tmp_path)
    for main in (first, second):
        products = load_prepared(main / "data" / "prepared")
        photos = [Path(p) for p in products["image_path"] if p]
        reviewed = products.index.str.startswith("feedback-")
        assert reviewed.any() and (products.loc[reviewed, "image_path"] != "").any()
        assert len(photos) >= 12 and all(p.is_file() for p in photos)
        assert {p.resolve().parent for p in photos} == {
            (data / "images" / "image_train").resolve(),
            (feedback / "images" / "image_train").resolve(),
        }
        assert all(os.path.abspath(p).startswith(f"{main.parent}/") for p in photos)  # its own


def test_a_data_folder_given_absolute_is_recorded_as_given(sample, tmp_path, monkeypatch):
    data = copy_subset(sample, tmp_path / "subset", per_modality=2)
    monkeypatch.chdir(tmp_path)
    snapshot = write_snapshot(data, Path("snapshot.json"))
    assert snapshot["data_dir"] == str(data)
    meta = prepare(validate(data), tmp_path / "prepared", SplitParams())
    assert meta["image_dir"] == str(data / "images" / "image_train")
    products = load_prepared(tmp_path / "prepared")
    assert all(Path(p).is_file() for p in products["image_path"] if p)
