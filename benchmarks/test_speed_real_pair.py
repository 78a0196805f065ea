"""Speed on the real default pair: every drafting condition against the target alone, side by side in one run.

Run:  pytest benchmarks/test_speed_real_pair.py --benchmark-only -s

For each bundled set (pl-questions, pl-grammar, en-prompts) it takes the first
PROMPTS prompts and, prompt by prompt, runs every condition once (the order
rotates from prompt to prompt, so slow drifts of the machine spread over all
conditions): the target alone, the ``mlx`` drafter with fixed k = 1, 2, 4,
the ``adaptive`` k policy, the model-free ``lookup`` drafter (k = 4, and adaptive), the hybrid
``lookup+mlx`` (adaptive, each source learnt apart), and the kept
cheaper-draft variant (``head``: the drafter's LM head restricted to its 8192
most frequent ids). Every output must equal the target alone (asserted). It
prints one table per set: speedup = the target alone's total time ÷ the
condition's total time for the same tokens, tokens/s, accepted per cycle,
acceptance, the k chosen, and the set's repetition (the mean share of the target alone's generated ids
that continue a 4-gram already in the prompt or the earlier output, ``specfw.study.repetition``: the text a
copying drafter can reuse); then paired rows (``PAIRS``): the hybrid's speedup over
each of its parts on the same prompts, with a 95% interval from resampling the prompts.

Environment: ``SPECFW_SPEED_PROMPTS`` (16), ``SPECFW_SPEED_TOKENS`` (64),
``SPECFW_SPEED_REPEATS`` (1: each run is repeated this many times back to back and the fastest kept, which
takes out most of what other processes on the machine add), ``SPECFW_SPEED_SETS`` (comma-separated bundled sets:
pl-questions, pl-grammar, en-prompts, en-prose, pl-prose, code, rewrite), ``SPECFW_SPEED_CONDITIONS``
(comma-separated names from CONDITIONS), ``SPECFW_SPEED_EMULATE`` (a shape for ``specfw.models.emulation``, e.g.
``llama-3.2-1b``: the target's passes cost what that larger model's cost, its output stays the real target's;
a study tool, named so in the report), ``SPECFW_SPEED_OUT`` (a folder:
append to ``records.jsonl``, one line per run, and write ``report.md`` there for every set the folder
holds, so the sets can be run one invocation each).
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
import pytest

from specfw.models.blas import blas_in_use
from specfw.config import RunConfig
from specfw.study.datasets import load_dataset
from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET
from specfw.models.loading import load_model
from specfw.study.repetition import repetition_share
from specfw.run import Run, prompt_ids

SETS = os.environ.get("SPECFW_SPEED_SETS", "pl-questions,pl-grammar,en-prompts").split(",")
PROMPTS = int(os.environ.get("SPECFW_SPEED_PROMPTS", "16"))
TOKENS = int(os.environ.get("SPECFW_SPEED_TOKENS", "64"))
REPEATS = int(os.environ.get("SPECFW_SPEED_REPEATS", "1"))
# a study tool: a random-weight shadow of this shape behind the target (specfw.models.emulation), e.g. llama-3.2-1b
EMULATE = os.environ.get("SPECFW_SPEED_EMULATE") or None
# name -> RunConfig fields (None: the target alone)
CONDITIONS = {
    "target alone": None,
    "mlx k=1": dict(k=1),
    "mlx k=2": dict(k=2),
    "mlx k=4": dict(k=4),
    "mlx adaptive": dict(k=2, k_policy="adaptive"),
    "lookup k=4": dict(drafter="lookup", k=4),
    "lookup adaptive": dict(drafter="lookup", k=4, k_policy="adaptive"),
    "lookup+mlx adaptive": dict(drafter="lookup+mlx", k=2, k_policy="adaptive"),
    "mlx head=8192 k=2": dict(k=2, drafter_options={"head": "8192"}),
    "mlx k=2 ahead=2": dict(k=2, draft_ahead=2),  # PEARL-style parallel drafting (--draft-ahead 2)
}
ALL_CONDITIONS = dict(CONDITIONS)  # the report's row order, whichever conditions an invocation runs
# (condition, against): the hybrid against each of its parts, paired prompt by prompt (``_paired``)
PAIRS = [("lookup+mlx adaptive", "lookup adaptive"), ("lookup+mlx adaptive", "mlx adaptive")]
if os.environ.get("SPECFW_SPEED_CONDITIONS"):
    CONDITIONS = {n: CONDITIONS[n] for n in ["target alone", *os.environ["SPECFW_SPEED_CONDITIONS"].split(",")]}


@pytest.fixture(scope="module")
def pair():
    target = load_model(DEFAULT_TARGET)
    if EMULATE:
        from specfw.models.emulation import shadowed

        target = shadowed(target, EMULATE)
    return target, load_model(DEFAULT_DRAFT)


def _run(pair, prompt: str, fields: dict | None, max_tokens: int = TOKENS):
    target, draft = pair
    if fields is None:
        run = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=max_tokens), target=target)
    else:
        config = RunConfig(prompt=prompt, max_tokens=max_tokens, translator="context", **fields)
        run = Run(config, target=target, draft=draft if config.drafter != "lookup" else None)
    start = time.perf_counter()
    result = run.result()
    return result, time.perf_counter() - start


def _timed(pair, prompt: str, fields: dict | None):
    """The fastest of REPEATS runs (greedy: every repeat yields the same ids; the fastest is the least disturbed)."""
    return min((_run(pair, prompt, fields) for _ in range(REPEATS)), key=lambda run: run[1])


def _record(dataset, item, name, result, seconds, reference, repetition) -> dict:
    s = result.stats
    return {
        "dataset": dataset, "prompt_id": item.id, "condition": name, "seconds": seconds,
        "generated": s.generated, "cycles": s.cycles, "proposed": s.proposed, "accepted": s.accepted,
        "tps": s.tps, "k_counts": {str(k): n for k, n in sorted(s.k_counts.items())}, "sources": s.sources,
        "lossless": result.token_ids == reference, "repeats": REPEATS,
        "repetition": repetition,  # the target alone's, on this prompt (the same on every condition's record)
    }


def _table(records: list[dict]) -> tuple[list[str], dict]:
    """Markdown rows per set, and the speedups by (set, condition)."""
    by = defaultdict(list)
    for r in records:
        by[(r["dataset"], r["condition"])].append(r)
    lines, speedups = [], {}
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        base = sum(r["seconds"] for r in by[(dataset, "target alone")])
        n = len(by[(dataset, "target alone")])
        lines += [f"\n### {dataset} ({n} prompts, {TOKENS} tokens)\n",
                  "| condition | speedup vs target alone | tokens/s | accepted per cycle | acceptance | k chosen (k:cycles) "
                  "| repetition |",
                  "|---|---|---|---|---|---|---|"]
        for name in ALL_CONDITIONS:
            runs = by[(dataset, name)]
            if not runs:  # a condition this set was not run with (sets may be run one invocation each)
                continue
            seconds = sum(r["seconds"] for r in runs)
            tokens = sum(r["generated"] for r in runs)
            cycles = sum(r["cycles"] for r in runs)
            accepted, proposed = sum(r["accepted"] for r in runs), sum(r["proposed"] for r in runs)
            ks = defaultdict(int)
            for r in runs:
                for k, c in r["k_counts"].items():
                    ks[int(k)] += c
            speedups[(dataset, name)] = base / seconds
            shares = [r["repetition"] for r in runs if r.get("repetition") is not None]  # older records lack it
            repetition = f"{sum(shares) / len(shares):.1%}" if shares else "—"
            lines.append(
                f"| {name} | {base / seconds:.3f}× | {tokens / seconds:.1f} | {accepted / cycles if cycles else 0:.2f} | "
                f"{accepted / proposed if proposed else 0:.1%} | {' '.join(f'{k}:{c}' for k, c in sorted(ks.items())) or '—'} "
                f"| {repetition} |"
            )
    return lines, speedups


def _paired(records: list[dict], resamples: int = 2000) -> list[str]:
    """Markdown rows: for each set and each pair in PAIRS that was run, the first condition's speedup over the second.

    Speedup = the second's total seconds ÷ the first's over the same prompts; the 95% interval comes from
    resampling the prompts (bootstrap, fixed seed), so it says how far the prompts' spread lets the figure
    move; "faster on" counts the prompts where the first took less time.
    """
    seconds = {(r["dataset"], r["prompt_id"], r["condition"]): r["seconds"] for r in records}
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        for first, second in PAIRS:
            prompts = [p for (d, p, c) in seconds if d == dataset and c == first and (d, p, second) in seconds]
            if not prompts:
                continue
            a = [seconds[(dataset, p, first)] for p in prompts]
            b = [seconds[(dataset, p, second)] for p in prompts]
            rng = random.Random(0)
            ratios = []
            for _ in range(resamples):
                idx = [rng.randrange(len(prompts)) for _ in prompts]
                ratios.append(sum(b[i] for i in idx) / sum(a[i] for i in idx))
            ratios.sort()
            low, high = ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]
            faster = sum(x < y for x, y in zip(a, b))
            lines.append(f"| {dataset} | {first} ÷ {second} | {sum(b) / sum(a):.3f}× | {low:.3f}–{high:.3f} | "
                         f"{faster} of {len(prompts)} |")
    if lines:
        lines = ["\n### Paired: speedup of one condition over another, same prompts\n",
                 "| set | condition ÷ against | speedup | 95% interval (prompts resampled) | faster on |",
                 "|---|---|---|---|---|", *lines]
    return lines


def test_speed_on_the_real_pair(benchmark, pair):
    items = {dataset: load_dataset(dataset, limit=PROMPTS) for dataset in SETS}
    for fields in CONDITIONS.values():  # warm-up: one short run of each condition
        _run(pair, "Warm up, please.", fields, max_tokens=8)
    out = os.environ.get("SPECFW_SPEED_OUT")
    sink = None
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        sink = open(Path(out) / "records.jsonl", "a", encoding="utf-8")  # sets may be run one invocation each
    records = []
    names = list(CONDITIONS)
    try:
        for dataset, prompts in items.items():
            for i, item in enumerate(prompts):
                baseline, seconds = _timed(pair, item.prompt, None)
                reference = baseline.token_ids
                repetition = repetition_share(prompt_ids(pair[0].tokenizer, item.prompt), reference)
                runs = {"target alone": (baseline, seconds)}
                rotation = names[1:][i % (len(names) - 1):] + names[1:][: i % (len(names) - 1)]
                for name in rotation:
                    runs[name] = _timed(pair, item.prompt, CONDITIONS[name])
                for name in names:
                    result, seconds = runs[name]
                    record = _record(dataset, item, name, result, seconds, reference, repetition)
                    records.append(record)
                    if sink:
                        sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                        sink.flush()
                    assert record["lossless"], f"{name} differs from the target alone on {dataset}/{item.id}"
    finally:
        if sink:
            sink.close()
    lines, speedups = _table(records)
    benchmark.group = "speed-real-pair"
    benchmark.extra_info.update({f"{d}|{c}": round(v, 4) for (d, c), v in speedups.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    print("\n".join(lines + _paired(records)))
    if out:
        # the report covers every set in the folder (the last record of each set, prompt and condition)
        kept = {}
        for line in (Path(out) / "records.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            kept[(r["dataset"], r["prompt_id"], r["condition"])] = r
        lines, _ = _table(list(kept.values()))
        lines += _paired(list(kept.values()))
        emulated = [f"**Emulated target** (`SPECFW_SPEED_EMULATE={EMULATE}`, a study tool): the text, the "
                    "acceptance and the drafter are real; every target pass also forwarded a random-weight "
                    f"{EMULATE}-shaped model on the same ids, so each pass costs what a target that large costs.",
                    ""] if EMULATE else []
        header = [
            "# Speed on the default pair (CPU)" + (f", target emulated as {EMULATE}" if EMULATE else ""), "",
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} Linux, "
            f"{os.cpu_count()} cores, BLAS: {blas_in_use()}; target {pair[0].source}, drafter {DEFAULT_DRAFT}, "
            "float32, greedy, translator context. Every output equals the target alone (asserted).", "",
            *emulated,
            "Command:", "", "```",
            f"SPECFW_SPEED_OUT={out} SPECFW_SPEED_PROMPTS={PROMPTS} SPECFW_SPEED_TOKENS={TOKENS} "
            f"SPECFW_SPEED_REPEATS={REPEATS} " + (f"SPECFW_SPEED_EMULATE={EMULATE} " if EMULATE else "") +
            f"SPECFW_SPEED_SETS={','.join(SETS)} SPECFW_SPEED_CONDITIONS=\"{','.join(list(CONDITIONS)[1:])}\" "
            "pytest benchmarks/test_speed_real_pair.py --benchmark-only -s", "```", "",
            "(the report covers every set the folder's records.jsonl holds, whichever invocation ran it).", "",
            "Speedup = the target alone's total seconds over the set ÷ the condition's (same prompts, same tokens); "
            "repetition = the mean share of the target alone's generated ids that continue a 4-gram already in the "
            "prompt or the earlier output (the text a copying drafter can reuse); `records.jsonl` holds every run.",
        ]
        (Path(out) / "report.md").write_text("\n".join(header + lines) + "\n", encoding="utf-8")
