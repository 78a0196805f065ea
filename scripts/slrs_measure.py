"""``slrs`` against ``sample`` and ``tli`` + ``speculative`` on the default real pair, side by side.

For every bundled dataset, temperature, k and prompt: the target alone (for
one target step's time), then ``context`` + ``sample``, ``context`` + ``slrs``
and ``tli`` + ``speculative``, each with the same seed. Every run is appended to
``OUT`` (JSONL) at once, and a rerun skips what is there, so the sweep can be
interrupted. The table gives, pooled over prompts: accepted target ids per
cycle, tokens per second, the share of cycles ``slrs`` verified with the
``sample`` rule (fallback), and ψ's milliseconds per cycle against one
target step.

    python scripts/slrs_measure.py --limit 16 --max-tokens 64 --out slrs.jsonl
    python scripts/slrs_measure.py --report slrs.jsonl

Two processes can share a sweep (``--shards 2 --shard 0`` and ``--shard 1``,
each writing its own ``--out``; ``--report`` takes several files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

# name -> (translator, verifier, verifier options, drafter options, other RunConfig fields); drafter temp "run": the run's
CONDITIONS = {
    "sample": ("context", "sample", {}, {}, {}),
    # the drafter-side settings before 2026-12-04 (hold-back, re-encoded back-translation, no BOS text for the drafter)
    "sample-old-context": ("context", "sample", {}, {}, dict(
        translator_options={"unstable_share": "0.4", "back_window": "4"}, draft_prompt_prefix="")),
    "slrs": ("context", "slrs", {}, {}, {}),  # the drafter samples at min(temp, 0.3) (SLRSVerifier.draft_temp)
    "slrs-dtrun": ("context", "slrs", {}, {"temp": "run"}, {}),  # the drafter samples at the run's temperature
    "slrs-depth1": ("context", "slrs", {"depth": 1}, {}, {}),  # a candidate spans one draft id: no branch pass
    "slrs-dt0.3": ("context", "slrs", {}, {"temp": 0.3}, {}),  # the drafter samples at temperature 0.3
    "slrs-depth1-dt0.3": ("context", "slrs", {"depth": 1}, {"temp": 0.3}, {}),
    "tli+speculative": ("tli", "speculative", {}, {}, {}),
    "tli+speculative-dt0.3": ("tli", "speculative", {}, {"temp": 0.3}, {}),
}
DATASETS = ("pl-questions", "pl-grammar", "en-prompts")


def _key(row: dict) -> tuple:
    return row["dataset"], row["prompt_index"], row["temp"], row["k"], row["condition"]


def measure(args) -> None:
    import specfw  # noqa: F401  (BLAS before MLX)
    from specfw.config import RunConfig
    from specfw.study.datasets import load_dataset
    from specfw.models.loading import load_model
    from specfw.run import Run

    out = Path(args.out)
    done = {_key(json.loads(line)) for line in out.read_text().splitlines()} if out.exists() else set()
    target, draft = load_model("gemma3-270m"), load_model("smollm2-135m-instruct")
    with out.open("a") as sink:
        for dataset in args.datasets.split(","):
            for index, item in enumerate(load_dataset(dataset, limit=args.limit)):
                for temp in [float(t) for t in args.temps.split(",")]:
                    if index % args.shards != args.shard:
                        continue
                    chosen = args.conditions.split(",")
                    runs = [("baseline", 0)] + [(c, int(k)) for k in args.ks.split(",") for c in chosen]
                    only = dict(part.split("@", 1) for part in args.only.split(",")) if args.only else {}
                    runs = [(c, k) for c, k in runs if c not in only or f"{dataset}:{temp}:{k}" in only[c].split("+")]
                    for condition, k in runs:
                        row = {"dataset": dataset, "prompt_index": index, "temp": temp, "k": k, "condition": condition}
                        if _key(row) in done:
                            continue
                        common = dict(prompt=item.prompt, temp=temp, seed=index, max_tokens=args.max_tokens)
                        if condition == "baseline":
                            config = RunConfig(**common, baseline=True)
                        else:
                            translator, verifier, options, drafter_options, fields = CONDITIONS[condition]
                            drafter_options = {n: (temp if v == "run" else v) for n, v in drafter_options.items()}
                            config = RunConfig(**common, k=k, translator=translator, verifier=verifier,
                                               verifier_options=options, drafter_options=drafter_options, **fields)
                        run = Run(config, target=target, draft=None if condition == "baseline" else draft)
                        result = run.result()
                        stats = result.stats
                        # the output's fingerprint: with `sample` (position-keyed draws) it equals the baseline's
                        row["ids_sha1"] = hashlib.sha1(json.dumps(result.token_ids).encode()).hexdigest()[:12]
                        drafter = run.draft_side.drafter if run.draft_side is not None else None
                        row["drafter_temp"] = getattr(drafter, "temp", None) if getattr(drafter, "sample", False) else None
                        row.update({name: getattr(stats, name) for name in (
                            "cycles", "proposed", "accepted", "generated", "decode_s", "verify_s", "fallback_cycles",
                            "psi_s", "zero_new_cycles")})
                        row["tps"] = stats.tps
                        sink.write(json.dumps(row) + "\n")
                        sink.flush()
                        print(json.dumps(row), flush=True)


def report(paths: list[str]) -> str:
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    step_ms = defaultdict(list)  # (dataset, temp) -> target-alone ms per token
    for r in rows:
        if r["condition"] == "baseline" and r["generated"] > 1 and r["decode_s"] > 0:
            step_ms[(r["dataset"], r["temp"])].append(1000 * r["decode_s"] / (r["generated"] - 1))
    groups = defaultdict(list)
    for r in rows:
        if r["condition"] != "baseline":
            groups[(r["dataset"], r["temp"], r["k"], r["condition"])].append(r)
    lines = ["| dataset | temp | k | condition | prompts | accepted/cycle | tok/s | fallback | ψ ms/cycle | target step ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, temp, k, condition), group in sorted(groups.items()):
        cycles = sum(r["cycles"] for r in group)
        accepted = sum(r["accepted"] for r in group)
        tps = sum(r["tps"] for r in group) / len(group)
        steps = step_ms.get((dataset, temp), [])
        step = f"{sum(steps) / len(steps):.1f}" if steps else "-"
        fallback = psi = "-"
        if condition.startswith("slrs"):
            fallback = f"{sum(r['fallback_cycles'] for r in group) / max(cycles, 1):.1%}"
            psi = f"{1000 * sum(r['psi_s'] for r in group) / max(cycles, 1):.1f}"
        lines.append(f"| {dataset} | {temp} | {k} | {condition} | {len(group)} | {accepted / max(cycles, 1):.3f} "
                     f"| {tps:.1f} | {fallback} | {psi} | {step} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--limit", type=int, default=16, help="prompts per dataset")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temps", default="0.7,1.0")
    parser.add_argument("--ks", default="2,4")
    parser.add_argument("--conditions", default="sample,slrs,tli+speculative",
                        help=f"comma-separated, of {', '.join(CONDITIONS)}")
    parser.add_argument("--only", default="", metavar="COND@SET:TEMP:K+...,...",
                        help="run these conditions only in the cells named, e.g. 'sample-old-context@pl-questions:0.7:2'")
    parser.add_argument("--shard", type=int, default=0, help="run the prompts whose index %% SHARDS is SHARD")
    parser.add_argument("--shards", type=int, default=1, help="how many processes share the sweep")
    parser.add_argument("--out", default="slrs_measure.jsonl")
    parser.add_argument("--report", metavar="JSONL", nargs="+", help="only print the table of an earlier sweep")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.report))
        return
    measure(args)
    print(report([args.out]))


if __name__ == "__main__":
    sys.exit(main())
