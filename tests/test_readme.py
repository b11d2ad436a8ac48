"""Each of the README's code blocks runs on its own, and its links lead somewhere (README.md is generated from
nbs/index.ipynb)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)


def test_the_first_example_uses_a_distilled_rule_by_name():
    assert BLOCKS and re.search(r'create_optimizer\("\w+_distilled"', BLOCKS[0]), BLOCKS[:1]


def test_every_python_block_runs_on_its_own(tmp_path):
    """Each block in a fresh interpreter of its own, in an empty directory: a reader pasting any one of them.
    The blocks run side by side, one thread each."""
    assert len(BLOCKS) >= 4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", block],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for block in BLOCKS
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for i, (proc, (out, err)) in enumerate(zip(procs, outs)):
        assert proc.returncode == 0, (
            f"README block {i} fails on its own:\n{BLOCKS[i]}\n{out[-3000:]}{err[-3000:]}"
        )
        assert out.strip(), f"README block {i} prints nothing"
    assert "loss after 100 steps" in outs[0][0]


def test_links_to_notebooks_exist():
    links = re.findall(r"\]\(((?!https?://|#)[^)\s]+)\)", README)
    assert links
    for link in links:
        assert (ROOT / link.split("#")[0]).exists(), f"README links to {link}, which does not exist"
