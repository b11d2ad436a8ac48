"""The notebooks read as pages of the library: every exported cell fits a screen and is followed by its
lesson, and each stage declares its scales right after its parameters."""

import json
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parent.parent / "nbs"
PAGES = sorted(NBS.glob("*.ipynb"))
STAGES = ["01_meta_train", "02_srgen", "03_distill", "04_finetune_resnet"]


def code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def is_export(source: str) -> bool:
    return source.startswith(("#| export", "#|export"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_exported_cell_is_followed_by_a_lesson(page):
    cells = code_cells(page)
    alone = [
        src.splitlines()[1][:60]
        for src, after in zip(cells, [*cells[1:], None])
        if is_export(src) and (after is None or is_export(after))
    ]
    assert not alone, f"{page.name}: exported cells with no lesson after them: {alone}"


# an export cell is read as one screen: at most this many lines, the `#| export` line included
SCREEN = 80


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_exported_cell_fits_a_screen(page):
    """A long class or function is split by concept into cells of one screen each, every one with its lesson
    after it (module-level helpers, or a base class holding one concept)."""
    long = [
        (src.splitlines()[1][:60], len(src.split("\n")))
        for src in code_cells(page)
        if is_export(src) and len(src.split("\n")) > SCREEN
    ]
    assert not long, f"{page.name}: exported cells over {SCREEN} lines: {long}"


@pytest.mark.parametrize("stage", STAGES)
def test_scales_come_right_after_the_parameters(stage):
    cells = code_cells(NBS / f"{stage}.ipynb")
    at = next(i for i, src in enumerate(cells) if src.startswith("#| tags: [parameters]"))
    assert "SCALES = {" in cells[at + 1] and "budget" in cells[at + 1], cells[at + 1][:200]
    assert sum("SCALES = {" in src for src in cells) == 1


def test_a_page_imports_only_from_pages_before_it():
    """Stages and their letter inserts are read in order (`00_optimizers`, `00a_features`, …, `01_meta_train`,
    …), then `library` (the one import) and `cli` (the command, over the library): a module's package imports
    come from the notebooks before its own."""
    package = NBS.parent / "symbolic_l2o"
    page_of = {}
    for module in package.glob("*.py"):
        first = module.read_text(encoding="utf-8").split("File to edit: ../nbs/", 1)
        if len(first) == 2:
            page_of[module.stem] = first[1].split(".ipynb", 1)[0]
    late = []
    for module, page in page_of.items():
        text = (package / f"{module}.py").read_text(encoding="utf-8")
        imported = {line.split()[1][1:] for line in text.splitlines() if line.startswith("from .")}
        rank = lambda p: {"library": "~0", "cli": "~1"}.get(p, p)  # after every numbered page, in this order
        late += [
            f"{page} imports {dep} ({page_of[dep]})" for dep in imported if rank(page_of[dep]) > rank(page)
        ]
    assert len(page_of) >= 12 and not late, late


def _private_imports(source: str, own: str | None) -> list[str]:
    """`module._name` for every private name that `source` imports from a package module other than `own`."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = node.module if node.level == 0 else f"symbolic_l2o.{node.module}"
            if module.startswith("symbolic_l2o") and module != f"symbolic_l2o.{own}":
                found += [f"{module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_module_imports_another_modules_private_name():
    """A name another module needs is public, documented and shown in its page: no package module and no
    notebook cell imports a private (`_`-prefixed) name from another module."""
    package = NBS.parent / "symbolic_l2o"
    found = {
        m.name: names
        for m in package.glob("*.py")
        if (names := _private_imports(m.read_text(encoding="utf-8"), m.stem))
    }
    for page in PAGES:
        cells = code_cells(page)
        own = next((c.split()[2] for c in cells if c.startswith("#| default_exp")), None)
        for src in cells:
            lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!", "#|"))]
            if names := _private_imports("\n".join(lines), own):
                found.setdefault(page.name, []).extend(names)
    assert not found, found
