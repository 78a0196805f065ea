"""The model cache: known models, import once, and bad input (missing part, wrong checksum, bad files).

Part files are provided by a throw-away package in tmp_path, so the failure
paths are exercised without touching the real model packages.
"""

from __future__ import annotations

import hashlib

import pytest

from specfw.models import catalog, store as model_store
from specfw.cli import main
from specfw.errors import ModelLoadError
from specfw.models.catalog import KnownModel, ensure_model
from specfw.models.store import is_imported, model_path


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """A package `specfw_fake_parts` holding two part files of a (fake) GGUF, and its checksum."""
    package = tmp_path / "site" / "specfw_fake_parts"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    chunks = [b"GGUF" + b"\x03" * 60, b"\x00" * 64]
    for i, chunk in enumerate(chunks):
        (package / "data" / f"fake.gguf.part{i:02d}").write_bytes(chunk)
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    (package / "data" / "SHA256SUMS").write_text(f"{digest}  fake.gguf\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return package, digest


def _fake_model(**overrides) -> KnownModel:
    fields = dict(
        name="fake-model",
        description="test",
        pip="specfw-fake-parts",
        gguf_name="fake.gguf",
        parts=(("specfw_fake_parts", "data/fake.gguf.part00"), ("specfw_fake_parts", "data/fake.gguf.part01")),
        size=128,
        sha256_file=("specfw_fake_parts", "data/SHA256SUMS"),
    )
    fields.update(overrides)
    return KnownModel(**fields)


def _register(monkeypatch, model: KnownModel) -> None:
    monkeypatch.setitem(catalog.KNOWN_MODELS, model.name, model)


def _no_leftovers(name: str) -> None:
    assert not model_path(name).exists()
    leftovers = [p.name for p in model_store.models_dir().iterdir() if name in p.name] if model_store.models_dir().exists() else []
    assert leftovers == [], leftovers


def test_missing_part_file(fake_parts, monkeypatch):
    package, _ = fake_parts
    (package / "data" / "fake.gguf.part01").unlink()
    _register(monkeypatch, _fake_model())
    with pytest.raises(ModelLoadError, match=r"part file .*fake\.gguf\.part01 is missing"):
        ensure_model("fake-model")
    _no_leftovers("fake-model")


def test_missing_package(monkeypatch):
    _register(monkeypatch, _fake_model(parts=(("specfw_no_such_package", "x.gguf"),)))
    with pytest.raises(ModelLoadError, match="needs the Python package 'specfw_no_such_package'"):
        ensure_model("fake-model")


def test_wrong_checksum(fake_parts, monkeypatch):
    package, _ = fake_parts
    (package / "data" / "SHA256SUMS").write_text("0" * 64 + "  fake.gguf\n")
    _register(monkeypatch, _fake_model())
    with pytest.raises(ModelLoadError, match="checksum mismatch for fake.gguf"):
        ensure_model("fake-model")
    _no_leftovers("fake-model")


def test_wrong_size(fake_parts, monkeypatch):
    _register(monkeypatch, _fake_model(size=129))
    with pytest.raises(ModelLoadError, match="parts add up to 128 bytes, expected 129"):
        ensure_model("fake-model")


def test_good_checksum_but_not_a_model(fake_parts, monkeypatch):
    """Assembly and checksum pass; the importer then rejects the file, and nothing is left behind."""
    _register(monkeypatch, _fake_model())
    with pytest.raises(Exception) as info:
        ensure_model("fake-model")
    assert "fake.gguf" in str(info.value) and "\n" not in str(info.value)
    _no_leftovers("fake-model")


def test_cli_import_errors_are_one_line(tmp_path, capsys):
    assert main(["models", "import", str(tmp_path / "absent.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a known model" in err[0]
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf at all")
    assert main(["models", "import", str(bogus), "--name", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bogus.gguf" in err[0] and "Traceback" not in err[0]
    assert not model_path("bogus").exists()


def test_list_shows_known_models(capsys):
    assert main(["models", "list", "--json"]) == 0
    import json

    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert {"gemma3-270m", "smollm2-135m-instruct", "tiny-random-mistral"} <= names


@pytest.mark.slow
def test_known_model_imports_once(capsys, tmp_path, monkeypatch):
    """The first use imports (with a log line); later uses load the cached folder without re-importing."""
    monkeypatch.setenv("SPECFW_CACHE", str(tmp_path / "fresh-cache"))
    lines: list[str] = []
    path = ensure_model("smollm2-135m-instruct", log=lines.append)
    assert is_imported("smollm2-135m-instruct") and any("imported" in line for line in lines)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    again: list[str] = []
    assert ensure_model("smollm2-135m-instruct", log=again.append) == path
    assert again == [] and (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert main(["models", "list"]) == 0
    assert "imported" in capsys.readouterr().out
