"""The context translator's options on the real default pair: the default vs variants (back-translation, close...).

    python scripts/back_translation_modes.py [--sets pl-questions,...] [--limit 2] [--k 2] [--max-tokens 48]
        [--variant NAME:KEY=VALUE,...] [--emulate SHAPE] [--out records.jsonl]

For each prompt of the bundled sets it runs the target alone, then ``context``
with the default options and with each ``--variant`` (default: ``append``,
i.e. ``back_window=0``, the default before it became ``auto``), checks every
output against the target alone, and prints per set the accepted draft ids per
target pass (the prompt pass counted; accepted = emitted ids that came from the
proposal) and how many of the default's cycles re-encoded (``resync``). A
variant whose run would be the same computation (no cycle of the default
resynced, and the variant always appends) is not rerun.

It also times every run (prompt pass included) and prints each variant's
speedup over the target alone: the geometric mean over the set's prompts of
target-alone seconds ÷ variant seconds, all measured in this one process. Pin
it to one core (``taskset -c 0``, ``OPENBLAS_NUM_THREADS=1``) for figures.
``--emulate SHAPE`` puts a shadow of that shape behind the target (as
``specfw run --emulate-target``), for a realistic drafter-to-target cost ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
from specfw.config import RunConfig
from specfw.study.datasets import load_dataset
from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET
from specfw.models.loading import load_model
from specfw.run import Run

SETS = "pl-questions,pl-prose,pl-grammar,en-prompts,en-prose,code,rewrite"


def _run(target, draft, prompt: str, args, options: dict) -> dict:
    run = Run(RunConfig(prompt=prompt, k=args.k, max_tokens=args.max_tokens, translator="context",
                        translator_options=options), target=target, draft=draft)
    t0 = time.perf_counter()
    result = run.result()
    seconds = time.perf_counter() - t0
    s = result.stats
    return {"token_ids": result.token_ids, "accepted": sum(result.from_draft), "proposed": s.proposed,
            "passes": s.cycles + (0 if s.prompt_pass_drafted else 1), "seconds": seconds,
            "closing_cycles": s.closing_cycles, "closing_ids": s.closing_ids,
            "modes": dict(getattr(run.draft_side.translator, "mode_counts", {}) or {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=SETS)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--variant", action="append", default=None, help="NAME:KEY=VALUE,... (repeatable)")
    parser.add_argument("--emulate", help="a shadow shape behind the target (e.g. llama-3.2-1b)")
    parser.add_argument("--out", help="append one JSON record per run here")
    args = parser.parse_args()
    variants = {"default": {}}
    for spec in args.variant or ["append:back_window=0"]:
        name, _, options = spec.partition(":")
        variants[name] = dict(item.split("=", 1) for item in options.split(",") if item)
    target, draft = load_model(DEFAULT_TARGET), load_model(DEFAULT_DRAFT)
    if args.emulate:
        from specfw.models.emulation import shadowed
        target = shadowed(target, args.emulate)
    for options in variants.values():  # warm up (first graph builds, allocations) outside the timed runs
        _run(target, draft, "Warm up.", argparse.Namespace(k=args.k, max_tokens=8), options)
    Run(RunConfig(prompt="Warm up.", baseline=True, max_tokens=8), target=target).result()
    out = open(args.out, "a") if args.out else None
    totals: dict = defaultdict(lambda: defaultdict(int))
    sets = args.sets.split(",")
    for dataset in sets:
        for item in load_dataset(dataset, limit=args.limit):
            t0 = time.perf_counter()
            alone = Run(RunConfig(prompt=item.prompt, baseline=True, max_tokens=args.max_tokens),
                        target=target).result().token_ids
            alone_s = time.perf_counter() - t0
            default = None
            for name, options in variants.items():
                if default is not None and options == {"back_window": "0"} and not default["modes"].get("resync"):
                    row = dict(default, modes={"append": sum(default["modes"].values())})  # the same computation
                else:
                    row = _run(target, draft, item.prompt, args, options)
                    assert row["token_ids"] == alone, f"{name} differs from the target alone on {dataset}/{item.id}"
                default = default or row
                total = totals[dataset, name]
                for key in ("accepted", "proposed", "passes"):
                    total[key] += row[key]
                total["log_speedup"] += math.log(alone_s / row["seconds"])
                total["prompts"] += 1
                for mode, count in row["modes"].items():
                    total[mode] += count
                if out:
                    out.write(json.dumps({"set": dataset, "id": item.id, "variant": name, "alone_s": alone_s,
                                          **{k: v for k, v in row.items() if k != "token_ids"}}) + "\n")
                    out.flush()
        print(f"{dataset} done", file=sys.stderr, flush=True)
    names = list(variants)
    print("| set | " + " | ".join(f"{n} acc/pass | {n} speedup" for n in names) + " | default's resync cycles |")
    print("|---" * (2 * len(names) + 2) + "|")
    for dataset in sets:
        cells = [f"{totals[dataset, n]['accepted'] / max(totals[dataset, n]['passes'], 1):.3f} "
                 f"({totals[dataset, n]['accepted']}/{totals[dataset, n]['passes']}) | "
                 f"{math.exp(totals[dataset, n]['log_speedup'] / max(totals[dataset, n]['prompts'], 1)):.3f}×"
                 for n in names]
        d = totals[dataset, "default"]
        print(f"| {dataset} | " + " | ".join(cells) + f" | {d['resync']}/{d['resync'] + d['append']} |")


if __name__ == "__main__":
    main()
