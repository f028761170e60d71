"""No result number typed by hand (issue 37): a decimal number in a notebook's markdown, the README (outside its
generated block) or SUMMARY.md's fixed text must be one of the paper's (``data/paper/*.csv`` or the supplementary's,
``data/paper/supplementary_numbers.txt``) or a constant of a method we follow, listed with its source in
``data/paper/method_constants.csv`` (metric definitions, mmpose's box padding). Numbers a run produces are printed by
code."""

import json
import re

import pytest

from genpercept_lib import results
from genpercept_lib.apps import reproduce

ROOT = results.REPO_ROOT
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.]*\d)")


def _values(text: str) -> set[float]:
    return {round(float(m), 6) for m in DECIMAL.findall(text)}


def paper_numbers() -> set[float]:
    allowed = set()
    for path in (ROOT / "data" / "paper").glob("*.csv"):
        allowed |= _values(path.read_text())
    lines = (ROOT / "data" / "paper" / "supplementary_numbers.txt").read_text().splitlines()
    return allowed | _values("\n".join(line for line in lines if not line.startswith("#")))


def strays(text: str) -> list[str]:
    allowed = paper_numbers()
    return sorted({m for m in DECIMAL.findall(text) if round(float(m), 6) not in allowed})


def test_the_check_catches_a_typed_number_and_passes_a_paper_one():
    assert strays("ours reached 0.327 AbsRel") == ["0.327"]
    assert strays("Table 2: 1/16 of the data") == [] and strays("version 2.1 of SD") == []  # 2.1 is the paper's


@pytest.mark.parametrize("path", reproduce.list_notebooks(), ids=lambda p: p.name)
def test_notebook_markdown_types_no_result_number(path):
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert strays(text) == [], f"{path.name}: print these from code, or cite them from the paper"


def test_the_readme_types_no_result_number_outside_its_generated_block():
    begin, end = results.README_MARKERS
    text = (ROOT / "README.md").read_text()
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + rest.split(end, 1)[1]
    assert strays(text) == []


def test_summary_fixed_text_types_no_number():
    path = ROOT / "results" / "SUMMARY.md"
    if not path.is_file():
        pytest.skip("no committed results yet")
    fixed = path.read_text().split("## Tables", 1)[0].split("|", 1)[0]  # before the generated tables
    assert strays(fixed) == []
