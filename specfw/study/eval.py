"""``specfw eval``: the paper's study on any model pair, resumable, one JSONL record per run.

For every prompt of every dataset, the target-alone baseline runs first, then
every condition (drafter × translator × k × cache-sync) on the same prompt.
Each finished run is appended to ``OUT/records.jsonl`` and flushed at once, so
an interrupted sweep loses nothing; rerun with the same ``--out`` and it skips
what is done. At the end ``OUT/report.md`` and the plots are (re)built from
the records alone (``specfw eval report OUT`` does only that).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from specfw.config import RunConfig, known_shape
from specfw.errors import ConfigError, SpecfwError
from specfw.study.records import EvalRecord, condition_name

RECORDS = "records.jsonl"
SWEEP = "sweep.json"
# Settings that change what a record means: a resumed sweep must keep them.
FIXED_SETTINGS = ("target", "max_tokens", "prefix_window", "chat", "temp", "verifier", "verifier_options",
                  "emulate_target")
_ADDED_SETTINGS = {"verifier_options": {}, "emulate_target": None}  # settings newer than some sweep.json files: their value there


class SweepConfig(BaseModel):
    """One evaluation sweep; ``--config sweep.toml`` and the command-line flags both build this."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[str] = Field(..., min_length=1, description="bundled names, JSONL files or HF dataset paths")
    translators: list[str] = Field(default_factory=lambda: ["none", "naive", "context"], min_length=1)
    k: list[int] = Field(default_factory=lambda: [2, 4], min_length=1)
    cache_syncs: list[str] = Field(default_factory=lambda: ["trim"], min_length=1)
    target: Optional[str] = None
    drafts: list[str] = Field(default_factory=list, description="one condition set per draft model")
    drafter: list[str] = Field(default_factory=lambda: ["mlx"], min_length=1,
                               description="drafter plugins, e.g. mlx, lookup, lookup+mlx (one condition set each)")
    k_policies: list[str] = Field(default_factory=lambda: ["fixed"], min_length=1,
                                  description="k policies (one condition set each); k is the starting k for adaptive")
    k_max: int = Field(8, ge=1, le=64)
    max_tokens: int = Field(128, ge=1)
    limit: Optional[int] = Field(None, ge=1)
    prefix_window: int = Field(4, ge=0)
    chat: bool = False
    # At temp > 0 a run's ids are not compared with the baseline's (``lossless`` is then True by construction):
    # sampling differs run by run, and tests/test_sampling.py and tests/test_slrs.py check the distribution.
    temp: float = Field(0.0, ge=0.0, description="sampling temperature (0: greedy); each prompt's seed is its index")
    verifier: Optional[str] = Field(None, description="verifier plugin (None: RunConfig's choice for temp and translator)")
    verifier_options: dict[str, Any] = Field(default_factory=dict, description="the verifier's settings (slrs: "
                                             "branches, min_mass, depth)")
    emulate_target: Optional[str] = Field(None, description="study tool: a shadow model shape forwarded beside the "
                                          "target on every pass (specfw.models.emulation); records name the target "
                                          "'TARGET+shadow:SHAPE'")
    out: Path

    _known_shape = field_validator("emulate_target")(classmethod(lambda cls, value: known_shape(value)))
    priors: bool = Field(True, description="the adaptive k policy reads and writes the priors file (specfw.priors)")

    @field_validator("drafter", mode="before")
    @classmethod
    def _drafter_list(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("k")
    @classmethod
    def _k_positive(cls, values: list[int]) -> list[int]:
        if any(k < 1 for k in values):
            raise ValueError("every k must be >= 1")
        return values

    def resolved(self) -> "SweepConfig":
        """With the default pair filled in when neither target nor drafts are given."""
        if self.target is None and not self.drafts:
            from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET

            return self.model_copy(update={"target": DEFAULT_TARGET, "drafts": [DEFAULT_DRAFT]})
        if self.target is None or not self.drafts:
            raise ConfigError("give both --target and at least one --draft (or neither, for the default pair)")
        return self


def load_sweep_file(path: str | Path, overrides: dict) -> SweepConfig:
    """A sweep from a TOML file; ``overrides`` (flags given on the command line) win."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sweep file '{path}' is not valid TOML: {exc}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    return SweepConfig(**data)


# --------------------------------------------------------------------------- the record file


def read_records(out: Path) -> list[EvalRecord]:
    """Records already in ``out``; a last line cut short by an interruption is dropped (and removed)."""
    path = out / RECORDS
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(EvalRecord.model_validate_json(line))
        except ValueError:
            if number == len(lines) and not raw.endswith(b"\n"):
                # killed mid-write: keep everything before it
                path.write_bytes(raw[: len(raw) - len(line)])
                break
            raise SpecfwError(f"{path}: line {number} is not a valid record; fix or remove it") from None
    return records


def append_record(out: Path, record: EvalRecord) -> None:
    with open(out / RECORDS, "a", encoding="utf-8") as sink:
        sink.write(record.model_dump_json() + "\n")
        sink.flush()
        os.fsync(sink.fileno())


def _check_same_sweep(out: Path, sweep: SweepConfig) -> None:
    """Refuse to mix records made with different fixed settings in one folder."""
    path = out / SWEEP
    current = {name: getattr(sweep, name) for name in FIXED_SETTINGS}
    if path.exists():
        previous = json.loads(path.read_text())
        previous = {**_ADDED_SETTINGS, **previous}
        changed = [n for n in FIXED_SETTINGS if previous.get(n) != current[n]]
        if changed:
            detail = ", ".join(f"{n}: {previous.get(n)!r} there, {current[n]!r} now" for n in changed)
            raise ConfigError(f"'{out}' holds a sweep with other settings ({detail}); use another --out")
    path.write_text(json.dumps({**current, "datasets": sweep.datasets, "translators": sweep.translators,
                                "k": sweep.k, "cache_syncs": sweep.cache_syncs, "drafts": sweep.drafts}, indent=2))


# --------------------------------------------------------------------------- running


def _sha(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def _record(item, condition: str, result, target, draft, baseline: EvalRecord | None, sweep, **fields) -> EvalRecord:
    s = result.stats
    fields.setdefault("repetition", None if baseline is None else baseline.repetition)
    sha = _sha(result.token_ids)
    return EvalRecord(
        dataset=item.dataset,
        prompt_id=item.id,
        condition=condition,
        target=target.source,
        max_tokens=sweep.max_tokens,
        generated=s.generated,
        cycles=s.cycles,
        proposed=s.proposed,
        accepted=s.accepted,
        verified_accepted=s.verified_accepted,
        acceptance_rate=s.acceptance_rate,
        tps=s.tps,
        prompt_s=s.prompt_s,
        decode_s=s.decode_s,
        speedup=1.0 if baseline is None else (s.tps / baseline.tps if baseline.tps > 0 else 0.0),
        # sampled runs differ run by run; their distribution is what the sampling tests check
        lossless=True if baseline is None or sweep.temp > 0 else sha == baseline.output_sha256,
        target_bytes=target.weight_bytes,
        draft_bytes=None if draft is None else draft.weight_bytes,
        output_sha256=sha,
        fallback_cycles=s.fallback_cycles,
        psi_s=s.psi_s,
        closing_cycles=s.closing_cycles,
        **fields,
    )


def run_sweep(sweep: SweepConfig, log: Callable[[str], None] | None = None, progress: bool = True) -> Path:
    """Run (or resume) a sweep; returns the path of the report."""
    from tqdm import tqdm

    from specfw.study.datasets import load_dataset
    from specfw.models.loading import load_model
    from specfw.plugins import get_registry
    from specfw.study.repetition import repetition_share
    from specfw.study.report import write_report
    from specfw.run import Run

    sweep = sweep.resolved()
    registry = get_registry()
    for name in sweep.translators:
        registry.get("translator", name)
    for name in sweep.cache_syncs:
        registry.get("cache_sync", name)
    if sweep.verifier is not None:
        registry.get("verifier", sweep.verifier)
    model_free = {name: not registry.get("drafter", name).cls.needs_model for name in sweep.drafter}
    for name in sweep.k_policies:
        registry.get("k_policy", name)
    items = [item for spec in sweep.datasets for item in load_dataset(spec, limit=sweep.limit)]
    if not items:
        raise ConfigError("the datasets hold no prompts")
    out = Path(sweep.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output folder '{out}': {exc.strerror}") from None
    _check_same_sweep(out, sweep)
    done = {r.key(): r for r in read_records(out)}

    # (draft model, drafter plugin, k policy, translator, k, cache-sync); a model-free drafter runs once, without
    # a draft model, in the target's vocabulary
    conditions = list(dict.fromkeys(
        (None if model_free[plugin] else draft_name, plugin, policy, translator, k, cache_sync)
        for draft_name in sweep.drafts
        for plugin in sweep.drafter
        for policy in sweep.k_policies
        for translator in (["identity"] if model_free[plugin] else sweep.translators)
        for k in sweep.k
        for cache_sync in sweep.cache_syncs
    ))
    total = len(items) * (1 + len(conditions))
    todo = total - sum(
        1 for item in items for c in ["baseline"] + [_condition_name(*c) for c in conditions]
        if (item.dataset, item.id, c) in done
    )
    if log:
        log(f"{len(items)} prompts x {1 + len(conditions)} runs = {total} records; {total - todo} already in {out / RECORDS}")
    if todo:
        target = load_model(sweep.target, log=log)
        if sweep.emulate_target is not None:
            from specfw.models.emulation import shadowed

            if log:
                log(f"emulated target: building a random-weight {sweep.emulate_target} shadow (a study tool: "
                    "the text is the real target's, each pass costs the larger shape's)")
            target = shadowed(target, sweep.emulate_target)
        drafts = {name: load_model(name, log=log) for name in sweep.drafts}
        common = dict(max_tokens=sweep.max_tokens, prefix_window=sweep.prefix_window, chat=sweep.chat, temp=sweep.temp)
        _warm_up(target, drafts, sweep)
        bar = tqdm(total=total, initial=total - todo, unit="run", file=sys.stderr, disable=not progress,
                   dynamic_ncols=True)
        try:
            for seed, item in enumerate(items):
                base_key = (item.dataset, item.id, "baseline")
                baseline = done.get(base_key)
                if baseline is None:
                    bar.set_description(f"{item.dataset}/{item.id} baseline")
                    run = Run(RunConfig(prompt=item.prompt, baseline=True, seed=seed, **common), target=target)
                    result = run.result()
                    baseline = _record(item, "baseline", result, target, None, None, sweep,
                                       repetition=repetition_share(run.target_side.prompt_ids, result.token_ids))
                    append_record(out, baseline)
                    done[base_key] = baseline
                    bar.update()
                for draft_name, plugin, policy, translator, k, cache_sync in conditions:
                    name = _condition_name(draft_name, plugin, policy, translator, k, cache_sync)
                    if (item.dataset, item.id, name) in done:
                        continue
                    bar.set_description(f"{item.dataset}/{item.id} {name}")
                    config = RunConfig(prompt=item.prompt, drafter=plugin, k_policy=policy, k_max=sweep.k_max,
                                       translator=translator, k=k, cache_sync=cache_sync, seed=seed,
                                       verifier=sweep.verifier, verifier_options=sweep.verifier_options,
                                       priors=sweep.priors, **common)
                    draft = drafts.get(draft_name)
                    result = Run(config, target=target, draft=draft).result()
                    record = _record(item, name, result, target, draft, baseline, sweep,
                                     drafter=_drafter_label(draft_name, plugin, policy), translator=translator, k=k,
                                     cache_sync=cache_sync)
                    append_record(out, record)
                    done[record.key()] = record
                    bar.update()
        finally:
            bar.close()
    return write_report(out, out)


def _drafter_label(draft_name: str | None, plugin: str, policy: str) -> str:
    """The record's drafter: the draft model, with the drafter plugin and k policy where not mlx / fixed."""
    extra = [part for part, default in ((plugin, "mlx"), (policy, "fixed")) if part != default]
    if draft_name is None:  # a model-free drafter: it is named in ``extra``
        return " ".join(extra)
    return " ".join([draft_name] + extra)


def _condition_name(draft_name, plugin, policy, translator, k, cache_sync) -> str:
    return condition_name(_drafter_label(draft_name, plugin, policy), translator, k, cache_sync)


def _warm_up(target, drafts: dict, sweep: SweepConfig) -> None:
    """One short run per model before timing, so the first prompt does not pay one-off start-up costs."""
    from specfw.run import Run

    Run(RunConfig(prompt="Warm up.", baseline=True, max_tokens=4), target=target).result()
    for draft in drafts.values():
        Run(RunConfig(prompt="Warm up.", max_tokens=4, k=2, translator="context"),
            target=target, draft=draft).result()
