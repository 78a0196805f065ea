"""Does an emulated target behave like a real larger one? Measured speedups against the paper's cost model.

Reads the speed benchmark's records (``SPECFW_SPEED_OUT=DIR``, with ``SPECFW_SPEED_EMULATE=SHAPE``) and the
r and c that ``specfw bench costs --json`` measured for the same target, and prints, per set and fixed k,
the measured speedup of ``mlx k=K`` (the target alone's total seconds ÷ the condition's, same prompts and
tokens) beside the cost model's prediction from the same runs' acceptance:

    S = tokens per cycle / (1 + (k + 1) r + c k²)        (the paper's Eq. 5: k draft steps and one resync pass)
    S' = tokens per cycle / (1 + k r + c k²)             (specfw's cycle: the resync rides on the first draft step)

with tokens per cycle = generated ÷ cycles of each run (the paper's 1 + kα, counted as emitted), summed
over the set's prompts: predicted total time = Σ cycles × (1 + ... ) × T, baseline = Σ generated × T.

Then the break-even acceptance α* per set and fixed k three ways: the OLS of per-prompt tokens/s on
acceptance (the paper's Eq. 1-2, ``specfw.study.analysis.ols_break_even``, with its 95% delta-method interval), the
cost model's ((k + 1) r + c k²) / k from the measured r and c, and the paper's M2 Pro figures (its Table 5
OLS range and Table 7 formula, r = 0.07, c = 0.17).

    python scripts/cost_model_check.py docs/results/STUDY/records.jsonl docs/results/STUDY/costs.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", type=Path, help="the speed benchmark's records.jsonl")
    parser.add_argument("costs", type=Path, help="'specfw bench costs --json' output for the same target")
    parser.add_argument("--target", help="which target's costs to use (default: the one named +shadow:, else the first)")
    args = parser.parse_args(argv)
    try:
        records = [json.loads(line) for line in args.records.read_text(encoding="utf-8").splitlines() if line.strip()]
        costs = json.loads(args.costs.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cost_model_check: error: {exc}", file=sys.stderr)
        return 2
    wanted = args.target or next((c["target"] for c in costs if "+shadow:" in c["target"]), costs[0]["target"])
    cost = next((c for c in costs if c["target"] == wanted), None)
    if cost is None:
        print(f"cost_model_check: error: no costs for target '{wanted}' in {args.costs}", file=sys.stderr)
        return 2
    r, c = cost["r"], {int(k): v for k, v in cost["c"].items()}
    seconds = defaultdict(float)  # (dataset, condition) -> total seconds
    generated, cycles = defaultdict(int), defaultdict(int)
    for rec in records:
        key = (rec["dataset"], rec["condition"])
        seconds[key] += rec["seconds"]
        generated[key] += rec["generated"]
        cycles[key] += rec["cycles"]
    print(f"target {wanted}: r = {r:.3f}, c = " + ", ".join(f"{c[k]:.3f} (k={k})" for k in sorted(c)))
    print("| set | condition | tokens per cycle | measured | paper (k+1)r | ratio | specfw kr | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for (dataset, condition), total in sorted(seconds.items()):
        match = re.fullmatch(r"mlx k=(\d+)", condition)
        base = seconds.get((dataset, "target alone"))
        if not match or not base:
            continue
        k = int(match.group(1))
        if k not in c:
            continue
        measured = base / total
        per_cycle = generated[(dataset, condition)] / max(cycles[(dataset, condition)], 1)
        paper = per_cycle / (1 + (k + 1) * r + c[k] * k * k)
        fused = per_cycle / (1 + k * r + c[k] * k * k)
        print(f"| {dataset} | {condition} | {per_cycle:.2f} | {measured:.3f} | {paper:.3f} | {measured / paper:.3f} "
              f"| {fused:.3f} | {measured / fused:.3f} |")
    _break_even(records, r, c)
    return 0


PAPER_M2_PRO = {2: ("38-53%", "44%"), 4: ("77-92%", "81%")}  # Table 5 OLS range (Wikipedia..pl_alpaca), Table 7


def _break_even(records: list[dict], r: float, c: dict[int, float]) -> None:
    from specfw.study.analysis import break_even_alpha, ols_break_even

    by_prompt = {(rec["dataset"], rec["prompt_id"], rec["condition"]): rec for rec in records}
    print()
    print("| set | k | prompts | α* OLS (95% interval) | α* cost model | paper M2 Pro OLS | paper formula |")
    print("|---|---|---|---|---|---|---|")
    for dataset in sorted({rec["dataset"] for rec in records}):
        base = [rec for rec in records if rec["dataset"] == dataset and rec["condition"] == "target alone"]
        if not base:
            continue
        base_tps = sum(b["generated"] for b in base) / sum(b["seconds"] for b in base)
        for k in sorted(c):
            runs = [by_prompt.get((dataset, b["prompt_id"], f"mlx k={k}")) for b in base]
            runs = [run for run in runs if run and run["proposed"]]
            if len(runs) < 3:
                continue
            fit = ols_break_even([run["accepted"] / run["proposed"] for run in runs],
                                 [run["generated"] / run["seconds"] for run in runs], base_tps)
            interval = "" if fit.ci is None else f" ({fit.ci[0]:.0%} to {fit.ci[1]:.0%})"
            ols = f"{fit.alpha_star:.0%}{interval}" if fit.alpha_star is not None else f"n/a ({fit.reason})"
            paper = PAPER_M2_PRO.get(k, ("", ""))
            print(f"| {dataset} | {k} | {len(runs)} | {ols} | {break_even_alpha(k, r, c[k]):.0%} | {paper[0]} "
                  f"| {paper[1]} |")


if __name__ == "__main__":
    sys.exit(main())
