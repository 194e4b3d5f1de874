"""The built HTML site, checked in a real browser (headless Chromium, Playwright).

Runs when the site has been built (`_build/html`, the README's set-up command)
and Chromium is installed; `.ci/run` provides both. Each page is served on
127.0.0.1 and opened in a fresh browser profile with no network. The three
scripts the pages load from CDNs (MathJax, require.js, the Jupyter widget
manager) are answered from a local copy of their npm packages, the folder
named by ``CNN_TOPICS_SITE_JS`` (`.ci/run` fills it); any other outside request
is refused and fails the page. Screenshots land in `_build/screenshots/`.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
JS = Path(os.environ.get("CNN_TOPICS_SITE_JS", ROOT / ".ci-cache" / "site-js"))
# CDN prefix -> folder of the local npm package copy
MIRRORS = {
    "https://cdn.jsdelivr.net/npm/mathjax@3/": "mathjax",
    "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/": "html-manager",
    "https://cdn.jsdelivr.net/npm/requirejs@2.3.4/": "requirejs",
}


def _missing() -> str | None:
    if not (SITE / "index.html").exists():
        return "the site is not built (run the README's set-up command)"
    if CHROMIUM is None:
        return "Chromium is not installed (apt-get install chromium)"
    if not all((JS / folder).exists() for folder in MIRRORS.values()):
        return f"no local copy of the site's CDN scripts in {JS} (see .ci/run)"
    return None


if _missing() and os.environ.get("CI"):
    raise RuntimeError(f"CI must check the site in a browser, but {_missing()}.")
pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))

PAGES = sorted(p.relative_to(SITE).as_posix() for p in SITE.glob("chapters/*.html"))
PAGES += sorted(p.relative_to(SITE).as_posix() for p in SITE.glob("labs/dist/*/student/*.html"))


@pytest.fixture(scope="module")
def server(serve):
    with serve(SITE) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


# For each widget view whose model carries the "try-it" class (utils.widgets.live_figure):
# does its cell's output also hold an image?
TRY_IT_PANELS_HAVE_FIGURES = """() => {
  const stateTag = document.querySelector("script[type='application/vnd.jupyter.widget-state+json']");
  const models = stateTag ? JSON.parse(stateTag.textContent).state : {};
  const isPanel = (id) => ((models[id] || {}).state || {})._dom_classes?.includes("try-it");
  return [...document.querySelectorAll("script[type='application/vnd.jupyter.widget-view+json']")]
    .filter((tag) => isPanel(JSON.parse(tag.textContent).model_id))
    .map((tag) => !!tag.closest(".cell_output") && tag.closest(".cell_output").querySelectorAll("img").length > 0);
}"""


def _mirror(route, refused: list[str]) -> None:
    url = route.request.url
    if url.startswith("http://127.0.0.1"):
        return route.continue_()
    for prefix, folder in MIRRORS.items():
        if url.startswith(prefix):
            path = JS / folder / url[len(prefix):].split("?")[0]
            if path.is_file():
                return route.fulfill(path=str(path))
    refused.append(url)
    return route.abort()


@pytest.fixture(scope="module")
def bibliography_ids(server, browser) -> set[str]:
    page = browser.new_page()
    page.goto(server + "bibliography.html")
    ids = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
    page.close()
    return ids


def _open(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    refused: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda route: _mirror(route, refused))
    page.goto(url, wait_until="load")
    page.wait_for_function("() => !window.MathJax || (window.MathJax.startup && window.MathJax.startup.promise)")
    page.evaluate("() => window.MathJax && window.MathJax.startup.promise")
    page.wait_for_load_state("networkidle")
    return context, page, errors, refused


def _expected_launch(page_path: str) -> tuple[str, str]:
    """Colab and Binder URLs for the notebook behind a page."""
    org_repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    branch = CONFIG["repository"]["branch"]
    if page_path.startswith("labs/dist/"):  # built, not committed: published to their own branch
        branch = CONFIG["sphinx"]["config"]["course_labs_branch"]
    notebook = page_path.removesuffix(".html") + ".ipynb"
    return (f"https://colab.research.google.com/github/{org_repo}/blob/{branch}/{notebook}",
            f"https://mybinder.org/v2/gh/{org_repo}/{branch}?urlpath=tree/{notebook}")


def test_every_chapter_is_built():
    built = {Path(p).stem for p in PAGES if p.startswith("chapters/")}
    assert built == {p.stem for p in (ROOT / "chapters").glob("*.ipynb")}


@pytest.mark.parametrize("page_path", PAGES)
def test_page_in_a_browser(server, browser, bibliography_ids, page_path):
    context, page, errors, refused = _open(browser, server + page_path)
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / (page_path.replace("/", "__").removesuffix(".html") + ".png")),
                        full_page=True)
        assert not refused, f"{page_path} requests outside resources: {refused}"
        assert not errors, f"{page_path} logs console errors: {errors}"

        images = page.eval_on_selector_all("article img", "els => els.map(e => [e.src, e.naturalWidth])")
        assert all(width > 0 for _, width in images), f"broken images: {[s for s, w in images if not w]}"

        math = page.eval_on_selector_all(".math", "els => els.map(e => !!e.querySelector('mjx-container'))")
        assert all(math), f"{math.count(False)} of {len(math)} formulas were not rendered by MathJax"
        assert page.locator("mjx-merror").count() == 0, "MathJax reports a TeX error"

        cites = page.eval_on_selector_all("a[href*='bibliography.html#']", "els => els.map(e => e.href)")
        dangling = [c for c in cites if c.split("#", 1)[1] not in bibliography_ids]
        assert not dangling, f"citations that do not land in the bibliography: {dangling}"

        launch = page.eval_on_selector_all("a[href*='colab.research.google.com'], a[href*='mybinder.org']",
                                           "els => els.map(e => e.href)")
        colab, binder = _expected_launch(page_path)
        assert colab in launch and binder in launch, f"launch buttons {launch} != {colab}, {binder}"

        if page_path.startswith("chapters/"):
            assert images, f"{page_path} shows no figure"
            if not page_path.startswith("chapters/00"):
                assert cites, f"{page_path} cites no paper"
        # Every "Try it" panel (not, e.g., a progress bar) comes with its static figure.
        panels = page.evaluate(TRY_IT_PANELS_HAVE_FIGURES)
        assert all(panels), f"{panels.count(False)} Try-it panel(s) without a static figure"
        if page_path.startswith("chapters/"):
            assert panels, f"{page_path} has no Try-it widget"
    finally:
        context.close()


def test_widget_pages_embed_widget_state():
    for path in PAGES:
        html = (SITE / path).read_text()
        if "widget-view+json" in html:
            assert re.search(r'application/vnd\.jupyter\.widget-state\+json', html), path
