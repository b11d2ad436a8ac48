"""The README's code runs as written, and its links lead somewhere (README.md is generated from
nbs/index.ipynb)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)


def test_the_first_example_uses_a_distilled_rule_by_name():
    assert BLOCKS and re.search(r'create_optimizer\("\w+_distilled"', BLOCKS[0]), BLOCKS[:1]


def test_every_python_block_runs_as_written(tmp_path):
    """The blocks in order, in one fresh interpreter (a reader pasting them one after another), in an empty
    directory."""
    assert len(BLOCKS) >= 4
    script = "\n".join(f"print('--- block {i}', flush=True)\n{b}" for i, b in enumerate(BLOCKS))
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("--- block") == len(BLOCKS) and "loss after 100 steps" in proc.stdout


def test_links_to_notebooks_exist():
    links = re.findall(r"\]\(((?!https?://|#)[^)\s]+)\)", README)
    assert links
    for link in links:
        assert (ROOT / link.split("#")[0]).exists(), f"README links to {link}, which does not exist"
