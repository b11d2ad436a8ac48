"""Build the docs site into `_docs/` offline, without Quarto (`make docs`).

1. Stage a copy of `nbs/` in which the cells that mix imports with other code are marked `#| eval: false`:
   nbdev's docs processing executes every cell holding an import (for `show_doc`), and those cells are
   the notebooks' experiments, which would run again (and some fail out of context). Their stored
   outputs are kept.
2. `nbdev.serve.proc_nbs` writes the processed notebooks to `_proc/` (show_doc output, `#| hide` cells
   removed, front matter).
3. Adapt them to Jupyter Book: front matter -> page title and summary, `#| echo: false` -> `remove-input`,
   papermill's parameters cells removed (they are knobs for `make run`, not content), this checkout's paths
   in show_doc's signatures made relative, remaining `#|` lines dropped, links into the nbdev site pointed at
   the local pages; the API page (`library`) comes right after the home page.
4. Jupyter Book 1 renders them without executing anything (`execute_notebooks: off`), math by the local
   MathJax 3 copied into a static folder `mathjax/` (not `_static`), into `_docs/`; signatures wrap (`site-css/`).
"""
import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")
# show_doc's signature is a python code block in the cell's output: wrapped, not a scroll box cut at the page's width
SIGNATURES_CSS = ".cell_output .highlight-python pre { white-space: pre-wrap; overflow-wrap: anywhere; overflow-x: visible; }\n"


def _mixes_imports(source: str) -> bool:
    lines = [l for l in source.splitlines() if not DIRECTIVE.match(l)]
    try: tree = ast.parse("\n".join(lines))
    except SyntaxError: return False
    nodes = list(ast.walk(tree))
    has_import = any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes)
    has_other = any(not isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body)
    return has_import and has_other and "show_doc" not in source


def stage_notebooks(src: Path, dst: Path) -> None:
    "Copy `src` to `dst`, marking cells that mix imports with other code `#| eval: false` (see the module docstring)."
    if dst.exists(): shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for path in dst.glob("*.ipynb"):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            source = "".join(cell["source"])
            directives = {m.group(1) for l in source.splitlines() if (m := DIRECTIVE.match(l))}
            if cell["cell_type"] == "code" and not directives & {"export", "exports", "exporti", "exec_doc", "eval"} \
                    and _mixes_imports(source):
                cell["source"] = "#| eval: false\n" + source
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False))


def _page_links(text: str, pages: dict[str, str], site: str) -> str:
    """Point links into the nbdev site (`{site}/meta_train.html#x`) at the local page (`01_meta_train.html#x`); the
    anchor becomes the id Sphinx gives the heading (`#FittedRule.save` -> `#fittedrule-save`)."""
    from docutils.nodes import make_id
    def repl(m):
        page = pages.get(m.group(1))
        return f"{page}{'#' + make_id(m.group(2)[1:]) if m.group(2) else ''}" if page else m.group(0)
    return re.sub(re.escape(site.rstrip("/")) + r"/([\w.-]+\.html)(#[\w.-]*)?", repl, text)


def adapt(proc: Path, site: str) -> list[str]:
    "Turn nbdev's processed notebooks into Jupyter Book pages; returns the page names (index first)."
    from symbolic_l2o.report import _relative_paths
    pages, notebooks = {}, sorted(proc.glob("*.ipynb"))
    for path in notebooks:
        nb = json.loads(path.read_text())
        first = nb["cells"][0] if nb["cells"] else None
        if first and first["cell_type"] == "raw" and "".join(first["source"]).lstrip().startswith("---"):
            import yaml
            fm = yaml.safe_load("".join(first["source"]).strip().strip("-")) or {}
            out = fm.get("output-file")
            if out: pages[out] = f"{path.stem}.html"
    for path in notebooks:
        nb = json.loads(path.read_text())
        cells = []
        for cell in nb["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "raw" and source.lstrip().startswith("---"):
                import yaml
                fm = yaml.safe_load(source.strip().strip("-")) or {}
                text = f"# {fm.get('title', path.stem)}\n" + (f"\n> {fm['description']}\n" if fm.get("description") else "")
                cells.append({"cell_type": "markdown", "id": "page-title", "metadata": {}, "source": text})
                continue
            if cell["cell_type"] == "code":
                kept, tags = [], set(cell.get("metadata", {}).get("tags", []))
                for line in source.splitlines():
                    m = DIRECTIVE.match(line)
                    if not m: kept.append(line); continue
                    if m.group(1) == "echo" and m.group(2).lower() == "false": tags.add("remove-input")
                    if m.group(1) == "output" and m.group(2).lower() == "false": tags.add("remove-output")
                    if m.group(1) == "tags" and "parameters" in m.group(2): tags.add("parameters")
                if "parameters" in tags: tags.add("remove-cell")
                cell["source"] = "\n".join(kept).strip("\n")
                if tags: cell.setdefault("metadata", {})["tags"] = sorted(tags)
                for out in cell.get("outputs", []):
                    md = out.get("data", {}).get("text/markdown")
                    if md is not None:
                        md = "".join(md)
                        md = re.sub(r"\{target=\"_blank\"[^}]*\}", "", md)  # Quarto link attributes of show_doc
                        md = re.sub(r"^---\s*$", "", md, flags=re.M)  # show_doc's rule: docutils allows none inside an output
                        # show_doc renders defaults such as the zoo's folder: this checkout's path, not the reader's
                        out["data"]["text/markdown"] = _relative_paths(_page_links(md, pages, site), ROOT)
            elif cell["cell_type"] == "markdown":  # links to notebooks -> their pages (all links are plain hrefs)
                cell["source"] = re.sub(r"\]\((?!https?://)([\w.-]+)\.ipynb", r"](\1.html", _page_links(source, pages, site))
            cells.append(cell)
        nb["cells"] = cells
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    return sorted((p.stem for p in notebooks), key=lambda s: (s != "index", s != "library", s))


def write_book_config(proc: Path, pages: list[str], title: str, author: str) -> None:
    import yaml
    config = {
        "title": title, "author": author, "copyright": "2026", "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"},
        "html": {"use_repository_button": False, "use_issues_button": False, "use_edit_page_button": False,
                 "use_download_button": False, "home_page_in_navbar": True},
        "launch_buttons": {"binderhub_url": "", "colab_url": "", "jupyterhub_url": "", "thebe": False},
        "parse": {"myst_enable_extensions": ["dollarmath", "amsmath", "colon_fence", "attrs_inline"]},
        "sphinx": {"config": {
            # Jupyter Book's extensions less sphinx_thebe (live code from a remote host; its config script is
            # added twice, a JS error) and sphinx_comments (remote comment services)
            "extensions": ["sphinx_togglebutton", "sphinx_copybutton", "myst_nb", "jupyter_book", "sphinx_external_toc",
                           "sphinx_design", "sphinx_book_theme"],
            # MathJax from this site: Sphinx puts a relative mathjax_path under _static/, hence the "../"
            "mathjax_path": "../mathjax/tex-svg-full.js", "html_extra_path": ["site-static"],
            "html_static_path": ["site-css"], "html_css_files": ["signatures.css"],
            "nb_render_markdown_format": "myst", "html_show_sourcelink": False, "myst_all_links_external": True,
            "nb_output_stderr": "remove",  # progress bars and warnings of the stored runs
            "suppress_warnings": ["myst.header", "misc.highlighting_failure", "mystnb.unknown_mime_type"]}},
    }
    (proc / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (proc / "_toc.yml").write_text(yaml.safe_dump(
        {"format": "jb-book", "root": pages[0], "chapters": [{"file": p} for p in pages[1:]]}, sort_keys=False))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mathjax", type=Path, required=True, help="MathJax 3 single-file build (es5/tex-svg-full.js)")
    ap.add_argument("--out", type=Path, default=ROOT / "_docs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nbs", type=Path, default=ROOT / "nbs", help="notebooks folder (default: nbs/)")
    args = ap.parse_args()
    from nbdev.config import get_config
    from nbdev.serve import proc_nbs
    cfg = get_config()
    staged = ROOT / "build" / "docs-nbs"
    stage_notebooks(args.nbs, staged)
    proc = Path(proc_nbs(path=str(staged), n_workers=args.workers, force=True))
    pages = adapt(proc, f"{cfg.doc_host}{cfg.doc_baseurl}")
    write_book_config(proc, pages, cfg.title, cfg.author)
    (proc / "site-css").mkdir(exist_ok=True)
    (proc / "site-css" / "signatures.css").write_text(SIGNATURES_CSS)
    mathjax_dir = proc / "site-static" / "mathjax"
    mathjax_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.mathjax, mathjax_dir / "tex-svg-full.js")
    build = ROOT / "build" / "jupyter-book"
    if build.exists(): shutil.rmtree(build)
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(proc), "--path-output", str(build),
                    "--builder", "html", "--quiet"], check=True)
    if args.out.exists(): shutil.rmtree(args.out)
    shutil.copytree(build / "_build" / "html", args.out)
    print(f"docs written to {args.out} ({len(pages)} pages: {', '.join(pages)})")


if __name__ == "__main__":
    main()
