"""Priors: what the ``adaptive`` k policy learnt, and what ``specfw tune`` recommends, kept across processes.

One JSON file in the model cache, ``<cache>/priors.json`` (``$SPECFW_CACHE``
or ``~/.cache/specfw``), with a ``version`` field and two tables:

* ``adaptive``: per device and pair (the run's target, draft model, drafter,
  translator, verifier, cache-sync, ... as :class:`specfw.protocols.KPolicySetup`
  names them), the adaptive policy's cost model: each source's draft cost per
  token, translation cost, acceptance pseudo-counts and token ratio, the
  exploration costs, and the target pass's cost line. The next run on the same
  pair starts from it, from the first cycle.
* ``recommendations``: per device, target and draft model, the drafter,
  translator, k policy and k that ``specfw tune`` measured fastest; ``run``,
  ``serve`` and ``eval`` use them for the flags the user did not give.

The device is MLX's default device, the BLAS in use, the machine and its CPU
count: costs measured on one are not used on another.

Writes take a lock (``priors.json.lock``, where ``fcntl`` exists), read the
file again, change one entry and replace the file atomically (temp file +
``os.replace``), so concurrent processes never leave it half written. A file
that cannot be read, is not valid JSON of this layout, or has another
``version`` is ignored with one ``specfw: warning: ...`` line on stderr (once
per process) and left as it is: nothing is written over it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VERSION = 1
FILE_NAME = "priors.json"
_warned: set[str] = set()


def priors_path() -> Path:
    from specfw.models.store import cache_dir

    return cache_dir() / FILE_NAME


def device_key() -> str:
    """MLX's default device, the BLAS in use, the machine and its CPU count."""
    import mlx.core as mx

    from specfw.models.blas import blas_in_use

    return f"{mx.default_device()} | {blas_in_use()} | {platform.machine()} | {os.cpu_count()} cpus"


def _warn(path: Path, why: str) -> None:
    if str(path) in _warned:
        return
    _warned.add(str(path))
    print(f"specfw: warning: priors file '{path}' ignored ({why}); it is left as it is, remove it to start afresh",
          file=sys.stderr)


def _read(path: Path) -> dict | None:
    """The file's content; {} when there is none; None (after one warning) when it is unusable."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        _warn(path, f"unreadable: {exc}")
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        _warn(path, f"not valid JSON: {exc}")
        return None
    if not isinstance(data, dict):
        _warn(path, "not a JSON object")
        return None
    if data.get("version") != VERSION:
        _warn(path, f"version {data.get('version')!r}, this specfw reads version {VERSION}")
        return None
    for table in ("adaptive", "recommendations"):
        if not isinstance(data.get(table, {}), dict):
            _warn(path, f"'{table}' is not a JSON object")
            return None
    return data


def load() -> dict:
    """The priors file's content (empty tables when there is none, or it is unusable)."""
    data = _read(priors_path()) or {}
    return {"version": VERSION, "adaptive": data.get("adaptive", {}),
            "recommendations": data.get("recommendations", {})}


@contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:  # no advisory locks here: the atomic replace still keeps the file whole
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update(table: str, key: str, value: dict) -> bool:
    """Set ``table[key] = value`` in the priors file; False (nothing written) when the file is unusable."""
    path = priors_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            data = _read(path)
            if data is None:
                return False
            data = {"version": VERSION, "adaptive": data.get("adaptive", {}),
                    "recommendations": data.get("recommendations", {})}
            data[table][key] = value
            fd, tmp = tempfile.mkstemp(prefix=".priors-", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as sink:
                    json.dump(data, sink, indent=1, sort_keys=True)
                    sink.flush()
                    os.fsync(sink.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except OSError as exc:
        _warn(path, f"cannot write: {exc}")
        return False
    return True


# --------------------------------------------------------------------------- the adaptive policy's cost model


def adaptive_key(pair: str) -> str:
    return f"{device_key()} || {pair}"


def load_cost_model(pair: str) -> dict | None:
    """The stored cost model of ``pair`` on this device, or None."""
    entry = load()["adaptive"].get(adaptive_key(pair))
    return entry if isinstance(entry, dict) else None


def save_cost_model(pair: str, model: dict) -> bool:
    return update("adaptive", adaptive_key(pair), model)


def finite(value: Any, default: float, low: float = 0.0) -> float:
    """``value`` as a finite float >= ``low``, else ``default`` (a hand-edited or damaged entry never crashes)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) and number >= low else default


# --------------------------------------------------------------------------- recommendations of specfw tune

RECOMMENDED_FIELDS = ("drafter", "translator", "k_policy", "k")


def recommendation_key(target: str | None, draft: str | None) -> str:
    """The recommendation's key; None for both names the default pair."""
    if target is None and draft is None:
        from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET

        target, draft = DEFAULT_TARGET, DEFAULT_DRAFT
    return f"{device_key()} || {target} || {draft}"


def recommendation(target: str | None, draft: str | None) -> dict | None:
    """What ``specfw tune`` recommended for this device, target and draft model, or None."""
    entry = load()["recommendations"].get(recommendation_key(target, draft))
    if not isinstance(entry, dict):
        return None
    rec = {name: entry.get(name) for name in RECOMMENDED_FIELDS}
    if not all(isinstance(rec[n], str) and rec[n] for n in ("drafter", "translator", "k_policy")):
        return None
    if not isinstance(rec["k"], int) or not 1 <= rec["k"] <= 64:
        return None
    return rec


def save_recommendation(target: str | None, draft: str | None, rec: dict) -> bool:
    return update("recommendations", recommendation_key(target, draft), rec)


def model_bytes(model) -> int:
    """Bytes of a model's parameters (what a forward pass reads), 0 when they cannot be counted."""
    try:
        from mlx.utils import tree_flatten

        return sum(int(v.nbytes) for _, v in tree_flatten(model.parameters()))
    except Exception:
        return 0


def draft_cost_hint(target_model, draft_model) -> float | None:
    """The drafter's cost per token in target steps, guessed before anything is measured: parameter bytes' ratio."""
    target, draft = model_bytes(target_model), model_bytes(draft_model)
    return draft / target if target > 0 and draft > 0 else None
