"""CSV exports for people: text that a spreadsheet would run as a formula stays text."""

from __future__ import annotations

import io

import pandas as pd

from prodclass.files import spreadsheet_safe_csv


def test_formula_cells_are_neutralised_and_the_rest_kept():
    frame = pd.DataFrame(
        {
            "designation": ['=HYPERLINK("http://x","y")', "+33 6", "Lot de 6 verres", "@SUM(1)"],
            "probability": [0.5, -0.25, 1.0, 0.0],
            "error": ["", "-1 bad", "\tTab", ""],
        },
        index=pd.Index(["=cmd|' /C calc'!A0", "r2", "r3", "r4"], name="row"),
    )
    back = pd.read_csv(io.BytesIO(spreadsheet_safe_csv(frame)), index_col=0, keep_default_na=False)
    assert list(back["designation"]) == [
        '\'=HYPERLINK("http://x","y")',
        "'+33 6",
        "Lot de 6 verres",
        "'@SUM(1)",
    ]
    assert list(back["probability"]) == [0.5, -0.25, 1.0, 0.0]  # numbers are not text
    assert list(back["error"]) == ["", "'-1 bad", "'\tTab", ""]
    assert back.index[0] == "'=cmd|' /C calc'!A0"
