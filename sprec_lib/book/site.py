"""Build the Jupyter Book from the executed notebooks (``sprec book build``), offline and strict.

:func:`build_book` runs ``jupyter-book build book/`` in strict mode (``-W -n --keep-going``). The
book does not execute notebooks itself (``execute_notebooks: "off"`` in ``book/_config.yml``).
Math is typeset by MathJax 3.2.2 served from the book: the Sphinx extension
``sphinx-mathjax-offline`` (a PyPI wheel that carries MathJax and its fonts; ``book/_config.yml``)
copies it into the HTML's ``_static/mathjax``. :func:`cdn_references` checks that no built page
loads a script, stylesheet or font from another host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..paths import book_dir
from .runner import NOTEBOOKS

# ----------------------------------------------------------------------------------------------
# building


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    return [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]


def build_book(
    strict: bool = True,
    book: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    check_offline: bool = True,
) -> Path:
    """``jupyter-book build`` the book (strict: ``-W -n --keep-going``); returns ``index.html``.

    ``output``: the folder that gets ``_build/`` (default: the book folder). With ``check_offline``
    the build fails
    if a page loads a script, stylesheet or font from another host (:func:`cdn_references`).
    """
    book = Path(book) if book is not None else book_dir()
    missing = [name for s in NOTEBOOKS for name in s.fixed_pages() if not (book / "executed" / f"{name}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"{book / 'executed'} lacks {', '.join(missing)}: run `sprec book run` first")
    cmd = [*_jupyter_book(), "build", str(book), "--builder", "html"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    if output is not None:
        cmd += ["--path-output", str(output)]
    subprocess.run(cmd, check=True)
    html = (Path(output) if output is not None else book) / "_build" / "html"
    if check_offline:
        remote = cdn_references(html)
        if remote:
            listing = "\n".join(f"  {page}: {url}" for page, url in remote[:20])
            raise RuntimeError(f"pages load assets from other hosts:\n{listing}")
    index = html / "index.html"
    print(f"the book: {index}")
    return index


def cdn_references(html_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """``(page, url)`` for every script, stylesheet, preload or font a built page (or a stylesheet
    under ``_static``) loads from an absolute ``http(s)://`` or ``//`` address. Links a reader
    clicks (``<a href>``) are not loads and are not listed."""
    import re
    from html.parser import HTMLParser

    class Loads(HTMLParser):
        def __init__(self):
            super().__init__()
            self.urls: list[str] = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag in ("script", "img", "iframe", "source", "audio", "video") and a.get("src"):
                self.urls.append(a["src"])
            elif tag == "link" and a.get("href") and set((a.get("rel") or "").split()) & {
                    "stylesheet", "preload", "modulepreload", "icon", "prefetch", "manifest"}:
                self.urls.append(a["href"])

    remote = re.compile(r"^(https?:)?//", re.I)
    found = []
    root = Path(html_dir)
    for page in sorted(root.rglob("*.html")):
        parser = Loads()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        found += [(str(page.relative_to(root)), u) for u in parser.urls if remote.match(u)]
    css_url = re.compile(r"""(?:@import\s+|url\()\s*['"]?((?:https?:)?//[^'")\s]+)""", re.I)
    for css in sorted((root / "_static").rglob("*.css")):
        found += [(str(css.relative_to(root)), u) for u in css_url.findall(css.read_text(encoding="utf-8", errors="replace"))]
    return found
