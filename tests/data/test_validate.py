"""Validation on corrupted copies of the real sample: every problem reported, none silent."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from prodclass.cli.main import app
from prodclass.data.layout import ChallengeLayout, read_features, read_labels
from prodclass.data.validate import DataValidationError, validate

runner = CliRunner()


def _x(folder):
    return read_features(ChallengeLayout(folder).x_train)


def _y(folder):
    return read_labels(ChallengeLayout(folder).y_train)


def _image_of(folder, row_id):
    x = _x(folder)
    return ChallengeLayout(folder).image_path(x.at[row_id, "imageid"], x.at[row_id, "productid"])


def _rows_with_image(folder, with_text=True):
    x = _x(folder)
    has_text = (x["designation"] != "") | (x["description"] != "")
    rows = [r for r in x.index if _image_of(folder, r).is_file()]
    return [r for r in rows if bool(has_text[r]) == with_text]


def _issues(result, code):
    return {i.row_id for i in result.report.issues if i.code == code}


def _rejected(result):
    return {r["row_id"]: r["reasons"] for r in result.report.rejected}


def test_clean_subset_has_no_rejections(subset):
    result = validate(subset)
    assert result.report.n_rejected == 0
    assert result.report.modalities == {"both": 12, "text_only": 12, "image_only": 12}


def test_missing_label_column_is_fatal_with_one_sentence(subset):
    _y(subset).rename(columns={"prdtypecode": "label"}).to_csv(ChallengeLayout(subset).y_train)
    with pytest.raises(DataValidationError, match="has no prdtypecode column"):
        validate(subset)
    out = runner.invoke(app, ["data", "validate", "--data", str(subset)])
    assert out.exit_code == 1
    assert "Y_train_CVw08PX.csv has no prdtypecode column" in out.output


def test_missing_feature_column_and_missing_file_are_fatal(subset):
    _x(subset).drop(columns=["imageid"]).to_csv(ChallengeLayout(subset).x_train)
    with pytest.raises(DataValidationError, match="lacks column.*imageid"):
        validate(subset)
    ChallengeLayout(subset).y_train.unlink()
    _x(subset)  # still readable
    with pytest.raises(DataValidationError):
        validate(subset)


def test_extra_columns_are_reported_not_fatal(subset):
    _x(subset).assign(price="12").to_csv(ChallengeLayout(subset).x_train)
    result = validate(subset)
    assert any("extra column" in w and "price" in w for w in result.report.warnings)
    assert result.report.n_rejected == 0


def test_bad_unknown_and_missing_labels_are_rejected(subset):
    y = _y(subset)
    bad, unknown, missing = y.index[:3]
    y.loc[bad, "prdtypecode"] = "toys"
    y.loc[unknown, "prdtypecode"] = "9999"
    y.drop(index=missing).to_csv(ChallengeLayout(subset).y_train)
    result = validate(subset)
    rejected = _rejected(result)
    assert rejected[bad] == ["bad_label"]
    assert rejected[unknown] == ["unknown_label"]
    assert rejected[missing] == ["missing_label"]
    assert result.report.n_accepted == 36 - 3
    assert not {bad, unknown, missing} & set(result.products.index)


def test_duplicate_ids_are_rejected_after_the_first(subset):
    x, y = _x(subset), _y(subset)
    dup_row = x.index[5]
    x2 = pd.concat([x, x.loc[[dup_row]]])
    x2.to_csv(ChallengeLayout(subset).x_train)
    y.to_csv(ChallengeLayout(subset).y_train)
    result = validate(subset)
    assert result.report.issue_counts["duplicate_id"] == 1
    assert "duplicate_id" in _rejected(result)[dup_row]
    assert (result.products.index == dup_row).sum() == 1  # the first occurrence is kept
    assert result.report.n_rejected == 1


def test_duplicate_productid_is_rejected(subset):
    x = _x(subset)
    x.loc[x.index[1], "productid"] = x.loc[x.index[0], "productid"]
    x.to_csv(ChallengeLayout(subset).x_train)
    result = validate(subset)
    assert _rejected(result) == {x.index[1]: ["duplicate_productid"]}


def test_broken_photos_lose_the_image_but_keep_the_text(subset):
    truncated, not_image, missing = _rows_with_image(subset, with_text=True)[:3]
    path = _image_of(subset, truncated)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _image_of(subset, not_image).write_bytes(b"<html>404 not found</html>")
    _image_of(subset, missing).unlink()
    result = validate(subset)
    unreadable = {i.row_id: i.message for i in result.report.issues if i.code == "image_unreadable"}
    assert "truncated" in unreadable[truncated]
    assert "not an image" in unreadable[not_image]
    assert missing in _issues(result, "image_missing")
    for row in (truncated, not_image, missing):
        assert result.products.at[row, "modality"] == "text_only"
        assert result.products.at[row, "image_path"] == ""
    assert result.report.n_rejected == 0


def test_image_only_row_with_broken_photo_is_rejected_with_reason(subset):
    row = _rows_with_image(subset, with_text=False)[0]
    path = _image_of(subset, row)
    path.write_bytes(path.read_bytes()[:500])
    result = validate(subset)
    assert _rejected(result) == {row: ["no_text_no_image"]}
    assert row in _issues(result, "image_unreadable")


def test_cli_writes_a_complete_report(subset, tmp_path):
    y = _y(subset)
    y.loc[y.index[0], "prdtypecode"] = "123"
    y.to_csv(ChallengeLayout(subset).y_train)
    report_path = tmp_path / "report.json"
    out = runner.invoke(
        app, ["data", "validate", "--data", str(subset), "--report", str(report_path)]
    )
    assert out.exit_code == 0, out.output
    report = json.loads(report_path.read_text())
    assert report["n_rows"] == 36 and report["n_rejected"] == 1
    assert report["rejected"] == [{"row_id": y.index[0], "reasons": ["unknown_label"]}]
    assert any(i["code"] == "unknown_label" and "123" in i["message"] for i in report["issues"])


def test_missing_folder_is_one_clear_error(tmp_path):
    out = runner.invoke(app, ["data", "validate", "--data", str(tmp_path / "nope")])
    assert out.exit_code == 1
    assert "does not exist" in out.output


def test_a_nul_in_a_field_is_a_row_issue_not_a_silent_cut(subset, tmp_path):
    """pandas' fast CSV reader ends a field at a NUL character without a word ("Piscine\\0
    tubulaire" was read as "Piscine", a label "2583\\0" as 2583). Each row holding one is
    rejected with the column and the reason; the other rows go on."""
    layout = ChallengeLayout(subset)
    x, y = _x(subset), _y(subset)
    titled = x.index[x["designation"] != ""]
    cut_title, cut_description, cut_id = titled[0], titled[1], titled[2]
    x.loc[cut_title, "designation"] = x.at[cut_title, "designation"][:5] + "\x00 hidden"
    x.loc[cut_description, "description"] = "\x00" + x.at[cut_description, "description"]
    x.loc[cut_id, "productid"] = x.at[cut_id, "productid"] + "\x00"
    cut_label = y.index[-1]
    y.loc[cut_label, "prdtypecode"] = y.at[cut_label, "prdtypecode"] + "\x00"
    x.to_csv(layout.x_train)
    y.to_csv(layout.y_train)
    assert layout.x_train.read_bytes().count(b"\x00") == 3  # the files hold them

    result = validate(subset)
    expected = {
        cut_title: "designation",
        cut_description: "description",
        cut_id: "productid",
        cut_label: "prdtypecode",
    }
    nul = {i.row_id: i.message for i in result.report.issues if i.code == "nul_character"}
    assert set(nul) == set(expected)
    for row_id, column in expected.items():
        assert nul[row_id].startswith(f"{column} holds a NUL character"), nul[row_id]
        assert "nul_character" in _rejected(result)[row_id]
    assert result.report.n_rows == 36
    assert result.report.n_accepted == 32  # every other row goes on
    assert not set(expected) & set(result.products.index)
    report_path = tmp_path / "report.json"
    result.report.write(report_path)  # the report names the rows and reasons
    written = json.loads(report_path.read_text())
    assert {i["row_id"] for i in written["issues"] if i["code"] == "nul_character"} == set(expected)


def test_a_nul_in_an_uploaded_batch_csv_is_refused_naming_the_row(subset):
    """The web app's batch page reads the CSV before sending it: a NUL is refused there with
    the row and column, not shown cut."""
    from prodclass.ui.views.batch import read_products

    x = _x(subset).head(5)
    row = x.index[3]
    x.loc[row, "designation"] = "Piscine\x00 tubulaire"
    with pytest.raises(ValueError, match=f"row {row}: designation holds a NUL character"):
        read_products(x.to_csv().encode())
    assert len(read_products(_x(subset).head(5).to_csv().encode())) == 5
