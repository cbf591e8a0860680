"""Build the Jupyter Book from the executed notebooks (``sprec book build``), offline and strict.

:func:`build_book` runs ``jupyter-book build book/`` in strict mode (``-W -n --keep-going``). The
book does not execute notebooks itself (``execute_notebooks: "off"`` in ``book/_config.yml``).
Math is typeset by MathJax 3 served from the book (:func:`ensure_mathjax`: the npm package,
fetched once with ``npm pack``, sha256-checked and cached); :func:`cdn_references` checks that no
built page loads a script, stylesheet or font from another host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..paths import book_dir
from .runner import NOTEBOOKS

# ----------------------------------------------------------------------------------------------
# MathJax, served from the book


MATHJAX_VERSION = "3.2.2"
# Where the book keeps it (book/_config.yml: html_static_path [_mathjax], mathjax_path mathjax/tex-chtml.js).
MATHJAX_DIR = Path("_mathjax") / "mathjax"
# sha256 of the npm tarball mathjax-3.2.2.tgz (npm checks its own sha512 integrity as well).
MATHJAX_SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
# What the book needs from the package's es5/ build: the TeX-to-CommonHTML bundle, its web fonts,
# the TeX extensions it may autoload, and the menu / accessibility components it loads lazily.
MATHJAX_PARTS = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y")


def _mathjax_cache(cache_dir=None) -> Path:
    from ..assets import cache_root

    return cache_root(cache_dir) / "mathjax" / MATHJAX_VERSION


def _fetch_mathjax(folder: Path) -> None:
    """``npm pack mathjax@VERSION`` (the npm registry's own client), check, extract the parts."""
    from ..assets import sha256_file

    npm = shutil.which("npm")
    with tempfile.TemporaryDirectory() as tmp:
        tgz = Path(tmp) / f"mathjax-{MATHJAX_VERSION}.tgz"
        hand_placed = folder.parent / tgz.name  # a tarball put there by hand is used as is
        if hand_placed.is_file():
            shutil.copy(hand_placed, tgz)
        elif npm is None:
            raise RuntimeError(
                f"MathJax {MATHJAX_VERSION} is not cached in {folder} and npm is not installed: install "
                f"Node.js/npm, or put mathjax-{MATHJAX_VERSION}.tgz (`npm pack mathjax@{MATHJAX_VERSION}`) "
                f"into {folder.parent}"
            )
        else:
            subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--pack-destination", tmp, "--silent"],
                           check=True, stdout=subprocess.DEVNULL, cwd=tmp)
        got = sha256_file(tgz)
        if got != MATHJAX_SHA256:
            raise RuntimeError(f"mathjax-{MATHJAX_VERSION}.tgz: sha256 {got}, expected {MATHJAX_SHA256}")
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
        with tarfile.open(tgz) as tar:
            wanted = [m for m in tar.getmembers()
                      if m.isfile() and (m.name == "package/LICENSE" or any(
                          m.name == f"package/es5/{p}" or m.name.startswith(f"package/es5/{p}/") for p in MATHJAX_PARTS))]
            tar.extractall(staging, members=wanted, filter="data")
        es5 = staging / "package" / "es5"
        shutil.copy(staging / "package" / "LICENSE", es5 / "LICENSE")
        (es5 / ".complete").write_text(MATHJAX_VERSION + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        es5.rename(folder)
        shutil.rmtree(staging)


def ensure_mathjax(dest: str | os.PathLike, cache_dir=None) -> Path:
    """MathJax's ``es5/`` parts in ``dest`` (the book's ``_mathjax/mathjax``), from the cache.

    The cache (``<cache root>/mathjax/VERSION``, see :func:`sprec_lib.assets.cache_root`) is filled
    once from the npm registry with ``npm pack``; the tarball's sha256 is checked.
    """
    dest = Path(dest)
    marker = dest / ".complete"
    if marker.is_file() and marker.read_text().strip() == MATHJAX_VERSION:
        return dest
    cache = _mathjax_cache(cache_dir)
    if not (cache / ".complete").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        _fetch_mathjax(cache)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(cache, dest)
    return dest


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

    ``output``: the folder that gets ``_build/`` (default: the book folder). MathJax is put into
    ``<book>/_mathjax/mathjax`` first (:func:`ensure_mathjax`). With ``check_offline`` the build fails
    if a page loads a script, stylesheet or font from another host (:func:`cdn_references`).
    """
    book = Path(book) if book is not None else book_dir()
    missing = [s.name for s in NOTEBOOKS if not s.per_dataset and not (book / "executed" / f"{s.name}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"{book / 'executed'} lacks {', '.join(missing)}: run `sprec book run` first")
    ensure_mathjax(book / MATHJAX_DIR)
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
