"""A speed study's speedups as one grouped bar chart: per set, each condition over the target alone.

Reads the speed benchmark's ``records.jsonl`` (``SPECFW_SPEED_OUT``); speedup = the target alone's total
seconds over the set ÷ the condition's (same prompts, same tokens); each set's label carries its repetition
(the mean share of the target alone's ids that continue a 4-gram already seen, ``specfw.study.repetition``).

    python scripts/plot_speed_study.py docs/results/STUDY/records.jsonl docs/results/STUDY/speedups.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--title", default="Speedup over the target alone")
    args = parser.parse_args(argv)
    try:
        records = [json.loads(line) for line in args.records.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        print(f"plot_speed_study: error: {exc}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds: dict[tuple[str, str], float] = defaultdict(float)
    repetition: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        seconds[(rec["dataset"], rec["condition"])] += rec["seconds"]
        if rec["condition"] == "target alone" and rec.get("repetition") is not None:
            repetition[rec["dataset"]].append(rec["repetition"])
    sets = list(dict.fromkeys(rec["dataset"] for rec in records))
    conditions = [c for c in dict.fromkeys(rec["condition"] for rec in records) if c != "target alone"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(sets) * max(1, len(conditions)) / 3), 4.5))
    width = 0.8 / max(len(conditions), 1)
    for j, condition in enumerate(conditions):
        xs, ys = [], []
        for i, dataset in enumerate(sets):
            cond, base = seconds.get((dataset, condition)), seconds.get((dataset, "target alone"))
            if cond and base:
                xs.append(i + (j - (len(conditions) - 1) / 2) * width)
                ys.append(base / cond)
        ax.bar(xs, ys, width, label=condition)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    labels = []
    for dataset in sets:
        reps = repetition.get(dataset)
        labels.append(f"{dataset}\nrepetition {sum(reps) / len(reps):.0%}" if reps else dataset)
    ax.set_xticks(range(len(sets)), labels)
    ax.set_ylabel("speedup (× the target alone)")
    ax.set_title(args.title)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
