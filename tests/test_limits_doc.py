"""docs/limits.md shows every limit the code enforces, with the test that proves each one."""

from __future__ import annotations

import re
from pathlib import Path

from simulator.lab.limits import BEGIN, END, render, rows

ROOT = Path(__file__).resolve().parent.parent


def test_the_limits_page_is_the_table_the_code_makes() -> None:
    text = (ROOT / "docs" / "limits.md").read_text()
    assert BEGIN in text and END in text
    table = text[text.index(BEGIN) : text.index(END) + len(END)] + "\n"
    assert table == render(), "regenerate it: python -m simulator.lab.limits"


def test_every_limit_names_a_test_that_exists() -> None:
    for listener, what, _, _, test in rows():
        path, _, name = test.partition("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"def {re.escape(name)}\(", source), f"{listener}: {what}: {test}"
