"""Lines of the package longer than the line length (110, as `[tool.ruff] line-length`): `make test` fails on any.

`ruff check --select E501` checks tests/ and bench/; the package is written by `nbdev_export`, which adds lines of
its own that no notebook holds: `_modidx.py`, the `__all__` block (wrapped at 120 columns) and the module docstring
on line 1 (the notebook's `> ` summary line, one line). Those are skipped; every other line comes from a notebook
cell, which `ruff format` and the wrapping of long strings, docstrings and comments keep within the limit.
Usage: python tools/line_length.py [--max 110] symbolic_l2o"""

import argparse
import sys
from pathlib import Path


def long_lines(path: Path, limit: int) -> list[tuple[int, str]]:
    "(line number, line) of each line of `path` over `limit` characters, nbdev's own lines excepted."
    out, in_all = [], False
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("__all__ = ["):
            in_all = True
        if in_all:
            in_all = not line.rstrip().endswith("]")
            continue
        if i == 1 and line.startswith('"""') and line.endswith('"""'):
            continue  # nbdev's module docstring: the notebook's summary line
        if len(line) > limit:
            out.append((i, line))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="files or folders (their *.py, _modidx.py excepted)")
    ap.add_argument("--max", type=int, default=110, help="the longest line allowed, in characters")
    args = ap.parse_args(argv)
    files = []
    for p in map(Path, args.paths):
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    bad = [(f, i, line) for f in files if f.name != "_modidx.py" for i, line in long_lines(f, args.max)]
    for f, i, line in bad:
        print(f"{f}:{i}: {len(line)} > {args.max} characters: {line[:80]}...")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
