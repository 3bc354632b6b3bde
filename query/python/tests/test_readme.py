"""The README's Python tour, run as doctests against an index built as the README builds it:
what it shows is what the package prints."""

import doctest
import re
from pathlib import Path

import pytest

from conftest import cli

ROOT = Path(__file__).resolve().parents[3]


def python_blocks():
    """The ``` blocks of the README's Python section that are interactive sessions."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n### Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(>>> .*?)```", section, re.S)
    assert len(blocks) >= 3, "the README's Python section lost its examples"
    return blocks


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    cli("index", "build", "--quiet", "--tokenizer", str(ROOT / "fixtures" / "tokenizer.json"),
        "--out", str(d / "idx"), str(ROOT / "fixtures" / "corpus"))
    (d / "fixtures").symlink_to(ROOT / "fixtures")
    return d


def test_readme_python_examples(readme_dir, monkeypatch):
    pytest.importorskip("pandas")
    monkeypatch.chdir(readme_dir)
    globs = {}
    # each block goes on from the names the earlier ones made (`index`, ...)
    for n, block in enumerate(python_blocks()):
        test = doctest.DocTestParser().get_doctest(block, globs, f"README block {n}", "README.md", 0)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
        out = []
        runner.run(test, out=out.append, clear_globs=False)
        globs = test.globs
        assert runner.failures == 0, "".join(out)
