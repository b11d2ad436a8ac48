"""Every name a user imports from `symbolic_l2o` has an example in its docstring, and the example runs.

Each ```python block of the docstring runs on its own, in a fresh namespace, as a user would paste it into
their own code: it imports what it uses, and runs in well under 2 s.
"""

import inspect
import re

import pytest

import symbolic_l2o
from symbolic_l2o import library

EXAMPLE = re.compile(r"```python\n(.*?)```", re.DOTALL)  # a fenced example block of a docstring

CASES = library.__all__


@pytest.mark.parametrize("name", CASES)
def test_docstring_example_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    obj = getattr(symbolic_l2o, name)
    blocks = EXAMPLE.findall(inspect.getdoc(obj) or "")
    assert blocks, f"{name}'s docstring has no ```python example"
    for i, code in enumerate(blocks):
        exec(compile(code, f"<example {i} of {name}>", "exec"), {"__name__": f"example_{name}"})  # noqa: S102
