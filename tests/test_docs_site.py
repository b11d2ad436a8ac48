"""The docs site (`make docs` -> `_docs/`) in headless Chromium: every page loads, math is typeset by the
local MathJax, every image loads, no request leaves 127.0.0.1, the API page opens with what users call,
signatures wrap, papermill's parameters cells and this machine's paths are nowhere. Saves
`_docs/screenshot-home.png`.

Skips (saying why) where Chromium or the built site is missing, except under CI=true, where it fails."""

import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "_docs"
IN_CI = os.environ.get("CI", "").lower() == "true"
# flags that keep Chromium from calling home on a closed network (and hanging on it)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
DISTILL_PAGE = "03_distill.html"
API_PAGE = "library.html"


def skip_or_fail(reason: str):
    if IN_CI:
        pytest.fail(f"{reason}; under CI=true the browser test must run")
    pytest.skip(reason)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    "`_docs/` served on 127.0.0.1 at a free port."
    if not (DOCS / "index.html").exists():
        skip_or_fail(f"{DOCS}/index.html is missing: build the site with `make docs`")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(DOCS))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


PAGE_STATE = """() => {
  const text = el => {
    const c = el.cloneNode(true);
    c.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
    return c.textContent;
  };
  const math = Array.from(document.querySelectorAll('.math'));
  return {
    title: document.title,
    mjx: document.querySelectorAll('mjx-container').length,
    untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    rawDisplayMath: text(document.body).includes('$$'),
    images: Array.from(document.images).map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
    headings: Array.from(document.querySelectorAll('main h3, main h4'))
      .map(h => h.textContent.replace(/[#¶]/g, '').trim()),
    signatures: Array.from(document.querySelectorAll('.cell_output .highlight-python pre'))
      .map(p => ({text: p.textContent.slice(0, 60), overflows: p.scrollWidth > p.clientWidth + 1})),
    code: Array.from(document.querySelectorAll('pre')).map(p => p.textContent).join('\\n'),
    outputs: Array.from(document.querySelectorAll('.cell_output')).map(e => e.innerText).join('\\n'),
    anchors: Array.from(document.links).filter(a => a.origin === location.origin && a.hash)
      .map(a => ({page: a.pathname.split('/').pop() || 'index.html',
                  id: decodeURIComponent(a.hash.slice(1))})),
  };
}"""


@pytest.fixture(scope="module")
def visits(site):
    "Every HTML page of the site visited once: its state after MathJax finished, and every request it made."
    executable = chromium_path()
    if executable is None:
        skip_or_fail(
            "Chromium is not installed (`make test` installs Debian's chromium with apt-get when run as root)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright package is not installed (it comes with `.[dev]`)")
    pages = sorted(p.name for p in DOCS.glob("*.html"))
    results, requests, outside, bad = {}, [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

        def route(r):  # every request is seen here; none that leaves 127.0.0.1 is let through
            requests.append(r.request.url)
            host = urlsplit(r.request.url).hostname
            if r.request.url.startswith(("data:", "blob:", "about:")) or host == "127.0.0.1":
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        context.on(
            "response", lambda resp: bad.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None
        )
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for name in pages:
            errors.clear()
            response = page.goto(f"{site}/{name}", wait_until="load", timeout=60_000)
            page.evaluate("() => document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=30_000)
            page.evaluate("() => window.MathJax && window.MathJax.startup && window.MathJax.startup.promise")
            results[name] = {
                "status": response.status if response else None,
                "js_errors": list(errors),
                **page.evaluate(PAGE_STATE),
            }
            if name == "index.html":
                page.screenshot(path=str(DOCS / "screenshot-home.png"))
        browser.close()
    return {"pages": results, "requests": requests, "outside": outside, "bad": bad}


def test_every_page_loads_without_errors(visits):
    assert len(visits["pages"]) >= 6, sorted(visits["pages"])
    problems = {
        n: (p["status"], p["js_errors"])
        for n, p in visits["pages"].items()
        if p["status"] != 200 or p["js_errors"]
    }
    assert not problems, f"pages that did not load cleanly: {problems}"
    assert not visits["bad"], f"requests answered with an error: {visits['bad']}"


def test_no_request_leaves_localhost(visits):
    assert visits["requests"], "no request was recorded"
    assert not visits["outside"], f"requests to other hosts: {sorted(set(visits['outside']))}"


def test_math_is_typeset_everywhere(visits):
    untypeset = {n: p["untypeset"] for n, p in visits["pages"].items() if p["untypeset"]}
    raw = [n for n, p in visits["pages"].items() if p["rawDisplayMath"]]
    assert not untypeset, f"math left as TeX: {untypeset}"
    assert not raw, f"raw $$ left in the text of {raw}"


def test_distill_page_shows_typeset_equations(visits):
    page = visits["pages"][DISTILL_PAGE]
    assert page["mjx"] > 0, f"no MathJax output on {DISTILL_PAGE}"


def test_every_image_loads(visits):
    broken = {n: [i["src"] for i in p["images"] if not i["ok"]] for n, p in visits["pages"].items()}
    broken = {n: b for n, b in broken.items() if b}
    assert not broken, f"images that did not load: {broken}"
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):  # every plot stored in a notebook is on its page
        stored = sum(
            "image/png" in out.get("data", {})
            for c in json.loads(nb.read_text())["cells"]
            for out in c.get("outputs", [])
        )
        shown = len(visits["pages"].get(f"{nb.stem}.html", {"images": []})["images"])
        assert shown >= stored, f"{nb.stem}.html shows {shown} images, the notebook stores {stored} plots"


def test_every_link_into_the_site_finds_its_anchor(visits):
    """The API reference's links (`fit_rule` in backticks becomes a link to its show_doc heading) land on an
    id."""
    pages = visits["pages"]
    links = [(n, a) for n, p in pages.items() for a in p["anchors"]]
    assert any(a["page"] != n for n, a in links), "no link between pages was found"
    missing = sorted(
        {
            f"{n} -> {a['page']}#{a['id']}"
            for n, a in links
            if a["page"] in pages and a["id"] not in pages[a["page"]]["ids"]
        }
    )
    assert not missing, f"links to anchors that do not exist: {missing[:20]} ({len(missing)} in all)"


def test_home_page_screenshot(visits):
    shot = DOCS / "screenshot-home.png"
    assert shot.exists() and shot.stat().st_size > 10_000
    assert "symbolic_l2o" in visits["pages"]["index.html"]["title"]


def test_api_page_opens_with_what_users_call(visits):
    page = visits["pages"][API_PAGE]
    assert page["headings"][:4] == ["RuleOptimizer", "create_optimizer", "fit_rule", "distill"], page[
        "headings"
    ][:8]


def test_signatures_wrap_instead_of_scrolling(visits):
    assert len(visits["pages"][API_PAGE]["signatures"]) >= 4
    cut = {n: [s["text"] for s in p["signatures"] if s["overflows"]] for n, p in visits["pages"].items()}
    cut = {n: c for n, c in cut.items() if c}
    assert not cut, f"signatures in a scroll box, cut at the page's width: {cut}"


def parameters_cells() -> dict[str, list[str]]:
    "page -> the code lines of its notebook's papermill parameters cell(s)."
    found = {}
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        for c in json.loads(nb.read_text())["cells"]:
            source = "".join(c["source"])
            if c["cell_type"] == "code" and (
                "parameters" in c.get("metadata", {}).get("tags", [])
                or re.search(r"^#\|\s*tags:.*parameters", source, re.M)
            ):
                found.setdefault(f"{nb.stem}.html", []).extend(
                    l for l in source.splitlines() if l.strip() and not l.startswith("#|")
                )
    return found


def test_parameters_cells_are_hidden(visits):
    cells = parameters_cells()
    assert cells, "no notebook has a papermill parameters cell: nothing to check"
    page_lines = {page: {l.strip() for l in visits["pages"][page]["code"].splitlines()} for page in cells}
    # whole lines
    shown = {page: [l for l in lines if l.strip() in page_lines[page]] for page, lines in cells.items()}
    shown = {p: l for p, l in shown.items() if l}
    assert not shown, f"parameters cells on the pages: {shown}"


ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:work|home|root|Users|tmp|var|opt|srv)/[\w.-]+|site-packages/")


def test_no_absolute_paths_of_the_machine_that_ran_the_notebooks(visits):
    found = {n: sorted(set(ABSOLUTE_PATH.findall(p["outputs"]))) for n, p in visits["pages"].items()}
    found = {n: f for n, f in found.items() if f}
    assert not found, f"pages showing this machine's paths: {found}"


def test_stored_outputs_hold_no_absolute_paths():
    """Outputs come into nbs/ from a run (`make outputs`, which makes paths relative): none names the
    machine's folders."""
    found = {}
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        for c in json.loads(nb.read_text())["cells"]:
            for out in c.get("outputs", []):
                texts = [out.get("text", "")] + [
                    v for k, v in out.get("data", {}).items() if k.startswith("text/")
                ]
                hits = ABSOLUTE_PATH.findall("".join("".join(t) if isinstance(t, list) else t for t in texts))
                if hits:
                    found.setdefault(nb.name, set()).update(hits)
    assert not found, f"stored outputs with absolute paths: {found}"
