"""The README quotes the example queries exactly as the suite runs them, and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from collector import schema

ROOT = Path(__file__).resolve().parents[2]


def test_readme_quotes_every_example_query_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    examples = schema.parse_named(schema.read_sql("examples.sql"))
    assert examples
    for name, body in examples.items():
        assert f"-- {name}\n" in readme, name
        # each statement, comments stripped, stands in the README as it is in examples.sql
        code = "\n".join(line for line in body.strip().splitlines() if not line.startswith("--"))
        assert code.strip() in readme, name


def test_readme_first_lines_are_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1 : lines.index("```")]
    assert len(block) == 2
    assert "python -m collector demo" in block[0]
    assert block[1] == "bash tests/run.sh"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash tests/run\.sh$", ci, re.MULTILINE)
