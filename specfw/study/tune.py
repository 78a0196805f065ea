"""``specfw tune``: measure a model pair on a few prompts and recommend how to run it on this device.

The target alone and every candidate condition (drafter ``mlx``, ``lookup``
and ``lookup+mlx``; the ``context`` translator; fixed k 1, 2, 4 and
``adaptive``) run on each prompt, alternated (each prompt starts the
conditions at another place in the list, so a slow spell of the machine
does not fall on one condition), with the models loaded once. A condition's
figure is its speed-up over the target alone: the geometric mean over the
prompts of the target alone's time over the condition's, prompt pass
included (``prompt_s + decode_s``). The fastest lossless condition is
recommended; when none is faster than the target alone, the fastest
``adaptive`` one (it falls back to plain target steps where drafting does not
pay). The recommendation goes into the priors file (:mod:`specfw.priors`)
under this device, target and draft model, where ``specfw run``, ``serve``
and ``eval`` find it for the flags the user does not give.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from specfw.errors import SpecfwError

DRAFTERS = ("mlx", "lookup", "lookup+mlx")
K_SETTINGS = (("fixed", 1), ("fixed", 2), ("fixed", 4), ("adaptive", 2))
DEFAULT_SELECTION = (("pl-questions", 3), ("en-prompts", 3))  # the bundled sets that need no extra package


@dataclass(frozen=True)
class Condition:
    drafter: str
    translator: str
    k_policy: str
    k: int

    @property
    def name(self) -> str:
        translator = "" if self.drafter == "lookup" else f" {self.translator}"
        return f"{self.drafter} {self.k_policy} k={self.k}{translator}"


def candidates(translator: str = "context") -> list[Condition]:
    return [Condition(d, "identity" if d == "lookup" else translator, p, k) for d in DRAFTERS for p, k in K_SETTINGS]


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a file: one per non-empty line, or JSONL lines with ``prompt`` or ``text``."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecfwError(f"prompt file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecfwError(f"cannot read prompt file '{path}': {exc}") from None
    lines = [line for line in raw.splitlines() if line.strip()]
    if path.suffix == ".jsonl" or (lines and lines[0].lstrip().startswith("{")):
        prompts = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise SpecfwError(f"{path}: line {number} is not valid JSON") from None
            text = row.get("prompt", row.get("text")) if isinstance(row, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise SpecfwError(f"{path}: line {number} has no 'prompt' or 'text' string")
            prompts.append(text)
    else:
        prompts = lines
    if not prompts:
        raise SpecfwError(f"prompt file '{path}' holds no prompts")
    return prompts


def select_prompts(prompts_file: str | None, dataset: str | None, limit: int | None) -> list[str]:
    """The prompts to tune on: a file, a dataset, or the default selection; at most ``limit``."""
    from specfw.study.datasets import load_dataset

    if limit is not None and limit < 1:
        raise SpecfwError(f"--limit must be at least 1, got {limit}")
    if prompts_file is not None and dataset is not None:
        raise SpecfwError("give --prompts FILE or --dataset NAME, not both")
    if prompts_file is not None:
        prompts = read_prompt_file(prompts_file)
    elif dataset is not None:
        prompts = [item.prompt for item in load_dataset(dataset)]
        if not prompts:
            raise SpecfwError(f"dataset '{dataset}' holds no prompts")
    else:
        prompts = [item.prompt for name, n in DEFAULT_SELECTION for item in load_dataset(name, limit=n)]
    return prompts[:limit] if limit is not None else prompts


@dataclass
class Row:
    condition: Condition | None  # None: the target alone
    speedup: float = 1.0  # geometric mean of the target alone's time / this condition's, prompt pass included
    decode_speedup: float = 1.0  # the same for decode tokens per second
    acceptance: float | None = None
    lossless: bool = True
    k_chosen: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "target alone" if self.condition is None else self.condition.name


@dataclass
class TuneResult:
    target: str
    draft: str | None
    device: str
    prompts: int
    max_tokens: int
    rows: list[Row]
    recommended: Condition
    reason: str

    def as_dict(self) -> dict:
        return {
            "target": self.target, "draft": self.draft, "device": self.device, "prompts": self.prompts,
            "max_tokens": self.max_tokens, "reason": self.reason,
            "recommendation": asdict(self.recommended),
            "rows": [{"condition": r.name, **({} if r.condition is None else asdict(r.condition)),
                      "speedup": r.speedup, "decode_speedup": r.decode_speedup, "acceptance": r.acceptance,
                      "lossless": r.lossless, "k_chosen": r.k_chosen} for r in self.rows],
        }

    def table(self) -> str:
        lines = [f"{'condition':<32} {'speed-up':>8} {'decode':>8} {'accepted':>8}  k chosen"]
        for r in sorted(self.rows, key=lambda r: -r.speedup):
            acc = "" if r.acceptance is None else f"{r.acceptance:.0%}"
            ks = " ".join(f"{k}:{n}" for k, n in sorted(r.k_chosen.items(), key=lambda kv: int(kv[0])))
            mark = "" if r.lossless else "  NOT LOSSLESS"
            lines.append(f"{r.name:<32} {r.speedup:>7.3f}x {r.decode_speedup:>7.3f}x {acc:>8}  {ks}{mark}")
        c = self.recommended
        lines.append(f"recommended for {self.target} + {self.draft} on this device: --drafter {c.drafter} "
                     f"--translator {c.translator} --k-policy {c.k_policy} --k {c.k} ({self.reason})")
        return "\n".join(lines)


def _geomean(values: list[float]) -> float:
    values = [v for v in values if v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else 0.0


def tune(prompts: list[str], target: str | None = None, draft: str | None = None, *, max_tokens: int = 48,
         translator: str = "context", log: Callable[[str], None] | None = None, target_model=None,
         draft_model=None, save: bool = True) -> TuneResult:
    """Measure the target alone and every candidate on ``prompts``; save and return the recommendation.

    ``target`` / ``draft``: model names as ``specfw run`` takes them (None for both: the default pair);
    ``target_model`` / ``draft_model``: already loaded models (tests).
    """
    from specfw.config import RunConfig
    from specfw.models.loading import load_model
    from specfw.priors import device_key, save_recommendation
    from specfw.run import Run

    if not prompts:
        raise SpecfwError("no prompts to tune on")
    if max_tokens < 1:
        raise SpecfwError(f"--max-tokens must be at least 1, got {max_tokens}")
    if (target is None) != (draft is None):
        raise SpecfwError("give both --target and --draft (or neither, for the default pair)")
    if target is None:
        from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET

        target, draft = DEFAULT_TARGET, DEFAULT_DRAFT
    say = log or (lambda line: None)
    target_model = target_model or load_model(target, log=log)
    draft_model = draft_model or load_model(draft, log=log)
    conditions = candidates(translator)

    def run(condition: Condition | None, prompt: str, tokens: int = max_tokens):
        if condition is None:
            config = RunConfig(prompt=prompt, baseline=True, max_tokens=tokens)
            return Run(config, target=target_model).result()
        config = RunConfig(prompt=prompt, drafter=condition.drafter, translator=condition.translator,
                           k_policy=condition.k_policy, k=condition.k, max_tokens=tokens, priors=True)
        uses_model = condition.drafter != "lookup"
        return Run(config, target=target_model, draft=draft_model if uses_model else None).result()

    say("tune: warming up")
    run(None, "Warm up.", 4)
    run(Condition("mlx", translator, "fixed", 2), "Warm up.", 4)
    order: list[Condition | None] = [None] + conditions
    times: dict[Condition | None, list[float]] = {c: [] for c in order}
    tps: dict[Condition | None, list[float]] = {c: [] for c in order}
    counts = {c: [0, 0] for c in conditions}
    k_chosen: dict[Condition, dict[str, int]] = {c: {} for c in conditions}
    lossless = {c: True for c in conditions}
    total, done = len(prompts) * len(order), 0
    for i, prompt in enumerate(prompts):
        shift = i % len(order)
        results = {}
        for condition in order[shift:] + order[:shift]:
            result = run(condition, prompt)
            results[condition] = result
            done += 1
            s = result.stats
            say(f"tune: [{done}/{total}] prompt {i + 1}/{len(prompts)} "
                f"{'target alone' if condition is None else condition.name}: {s.generated} tokens in "
                f"{s.prompt_s + s.decode_s:.2f}s")
        baseline = results[None]
        baseline_ids = baseline.token_ids
        for condition, result in results.items():
            s = result.stats
            times[condition].append(baseline.stats.prompt_s + baseline.stats.decode_s)
            times[condition][-1] /= max(s.prompt_s + s.decode_s, 1e-9)
            tps[condition].append(s.tps / baseline.stats.tps if baseline.stats.tps > 0 else 0.0)
            if condition is None:
                continue
            counts[condition][0] += s.accepted
            counts[condition][1] += s.proposed
            for k, n in s.k_counts.items():
                k_chosen[condition][str(k)] = k_chosen[condition].get(str(k), 0) + n
            lossless[condition] = lossless[condition] and result.token_ids == baseline_ids
    rows = [Row(None)] + [
        Row(c, _geomean(times[c]), _geomean(tps[c]), counts[c][0] / counts[c][1] if counts[c][1] else None,
            lossless[c], k_chosen[c]) for c in conditions]
    usable = [r for r in rows[1:] if r.lossless]
    if not usable:
        raise SpecfwError("no condition reproduced the target alone's output; nothing recommended")
    best = max(usable, key=lambda r: r.speedup)
    reason = f"the fastest, {best.speedup:.3f}x the target alone"
    if best.speedup < 1.0:
        adaptive = [r for r in usable if r.condition.k_policy == "adaptive"]
        if adaptive:
            best = max(adaptive, key=lambda r: r.speedup)
            reason = (f"no condition was faster than the target alone; the fastest adaptive one "
                      f"({best.speedup:.3f}x), which falls back to plain target steps")
    result = TuneResult(target, draft, device_key(), len(prompts), max_tokens, rows, best.condition, reason)
    if save:
        save_recommendation(target, draft, {**asdict(best.condition), "speedup": best.speedup,
                                            "prompts": len(prompts), "max_tokens": max_tokens})
    return result
