"""Compare two run directories' stage summaries key by key, timings aside: the check that a refactoring
changed no number ("the same seeds give the same numbers").

    python tools/compare_runs.py runs/<before> runs/<after>

Every `summary/*.json` of either run is flattened to `file › key › ...` paths; a table becomes one value per
row (named by its first cell) and column. Values that measure time (a key or column named like seconds, ms,
minutes, time, duration, per-epoch timings, a step-time ratio "vs Adam") are left out, and so are the SHA-256 of figures (PNG files
carry the plotting library's metadata). Everything else must be equal to the letter. Exits 1 and lists the
differences when any value differs or is present in one run only."""

import json
import re
import sys
from pathlib import Path

TIMING = re.compile(
    r"second|(^|[^a-z])ms([^a-z]|$)|minute|\bmin\b|time|duration|took|elapsed|vs adam", re.IGNORECASE
)


def flatten(value, path: tuple, out: dict) -> dict:
    "`value` as {path: leaf}; a table ({columns, rows}) as one leaf per (row's first cell, column)."
    if isinstance(value, dict) and set(value) >= {"columns", "rows"} and isinstance(value["rows"], list):
        for row in value["rows"]:
            for column, cell in zip(value["columns"], row):
                flatten(cell, (*path, f"[{row[0]}]", str(column)), out)
    elif isinstance(value, dict):
        for k, v in value.items():
            flatten(v, (*path, str(k)), out)
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            flatten(v, (*path, str(i)), out)
    else:
        out[path] = value
    return out


def kept(path: tuple) -> bool:
    "Not a timing, and not a figure's file or digest."
    return not any(TIMING.search(p) for p in path) and "figures" not in path


def summaries(run: Path) -> dict:
    found = {}
    for f in sorted((run / "summary").glob("*.json")):
        found.update({k: v for k, v in flatten(json.loads(f.read_text()), (f.name,), {}).items() if kept(k)})
    return found


def main(before: str, after: str) -> int:
    a, b = summaries(Path(before)), summaries(Path(after))
    differ = [k for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    only = sorted(a.keys() ^ b.keys())
    for k in differ:
        print(f"differs  {' › '.join(k)}: {a[k]!r} → {b[k]!r}")
    for k in only:
        print(f"only in {'before' if k in a else 'after '}  {' › '.join(k)}")
    same = len(a.keys() & b.keys()) - len(differ)
    print(
        f"{same} values equal, {len(differ)} differ, {len(only)} in one run only (timings and figures aside)"
    )
    return 1 if differ or only else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    raise SystemExit(main(*sys.argv[1:]))
