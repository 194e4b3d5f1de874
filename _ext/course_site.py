"""Small fixes to the built pages, loaded through `sphinx.local_extensions`.

* sphinx-thebe adds its inline configuration script (``const THEBE_JS_URL =
  ...``) each time Sphinx reads documents, and Jupyter Book makes that happen
  twice, so every page declared the constant twice and the browser logged a
  SyntaxError. Scripts are deduplicated page by page.
* The Jupyter widget manager (``@jupyter-widgets/html-manager``) finds its own
  fonts relative to the URI that require.js gives its module, which defaults to
  the page's folder, so widget icons were fetched from the site and failed.
  Pages with widgets first tell require.js where the manager really lives.
* The widget manager typesets labels with MathJax 2's ``MathJax.Hub.Queue``;
  the book loads MathJax 3, so every widget logged a TypeError. Widget pages
  get a two-line ``Hub.Queue`` that forwards to MathJax 3's typesetter.
* Student lab notebooks are built by ``python -m utils.labs assign``, not
  committed, so a launch button pointing at the main branch would open
  nothing. The publishing workflow pushes them to the branch named by
  ``course_labs_branch`` (same paths), and lab pages launch from there.
"""

WIDGET_MANAGER = "@jupyter-widgets/html-manager"
# Deferred MathJax 3 has run by DOMContentLoaded; widgets render after it.
MATHJAX2_QUEUE = """document.addEventListener("DOMContentLoaded", () => {
  if (window.MathJax && !window.MathJax.Hub && window.MathJax.typesetPromise) {
    window.MathJax.Hub = {Queue: (job) => window.MathJax.typesetPromise([job[2]])};
  }
});"""


def _tidy_scripts(app, pagename, templatename, context, doctree):
    # The same inline script arrives once with filename None and once with "".
    unique = {}
    for script in context.get("script_files", []):
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        unique.setdefault(key, script)
    scripts = list(unique.values())
    for i, script in enumerate(scripts):
        if f"/{WIDGET_MANAGER}@" in (script.filename or ""):
            # Two module ids: the manager itself (the script, whose folder holds the fonts)
            # and its dist/ sub-modules; require.js takes the longest matching prefix.
            dist = script.filename.rsplit("/dist/", 1)[0] + "/dist"
            paths = f'"{WIDGET_MANAGER}": "{script.filename.removesuffix(".js")}", "{WIDGET_MANAGER}/dist": "{dist}"'
            body = f"require.config({{paths: {{{paths}}}}});"
            scripts[i:i] = [type(script)("", priority=script.priority, body=code)
                            for code in (body, MATHJAX2_QUEUE)]
            break
    # In place: the list is the builder's own, which other handlers append to.
    context["script_files"][:] = scripts


def _rewrite_urls(node, old: str, new: str):
    if isinstance(node, dict):
        return {k: _rewrite_urls(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_urls(v, old, new) for v in node]
    if isinstance(node, str) and node.startswith("https://"):
        return node.replace(f"/blob/{old}/", f"/blob/{new}/").replace(f"/{old}?urlpath=", f"/{new}?urlpath=")
    return node


def _launch_labs_from_their_branch(app, pagename, templatename, context, doctree):
    if pagename.startswith("labs/dist/") and "header_buttons" in context:
        main = app.config.html_theme_options.get("repository_branch", "main")
        rewritten = _rewrite_urls(context["header_buttons"], main, app.config.course_labs_branch)
        context["header_buttons"][:] = rewritten


def setup(app):
    app.add_config_value("course_labs_branch", "student-labs", "html")
    # After sphinx-book-theme has made the launch buttons (priority 501).
    app.connect("html-page-context", _launch_labs_from_their_branch, priority=999)
    # Last, after myst-nb has added the page's widget scripts.
    app.connect("html-page-context", _tidy_scripts, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
