"""The context translator's unstable-word hold-back on the real default pair: on vs off, same prompts.

    python scripts/holdback_real_pair.py [--limit 10] [--k 2] [--max-tokens 32]

For each prompt of the three bundled sets, runs context with the default
``unstable_share`` and with it off, alternating, and prints per dataset:
acceptance, accepted tokens per cycle, cycles and summed decode time. Every
run's output is checked against the target alone.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import specfw  # noqa: F401
from specfw.config import RunConfig
from specfw.study.datasets import load_dataset
from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET
from specfw.models.loading import load_model
from specfw.run import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    target, draft = load_model(DEFAULT_TARGET), load_model(DEFAULT_DRAFT)
    settings = {"hold-back (default)": {}, "off": {"unstable_share": "off"}}
    totals = defaultdict(lambda: defaultdict(float))
    for dataset in ("pl-questions", "pl-grammar", "en-prompts"):
        for item in load_dataset(dataset, limit=args.limit):
            base = RunConfig(prompt=item.prompt, baseline=True, max_tokens=args.max_tokens)
            reference = Run(base, target=target).result().token_ids
            for name, options in settings.items():
                config = RunConfig(prompt=item.prompt, k=args.k, max_tokens=args.max_tokens, translator="context",
                                   translator_options=options)
                result = Run(config, target=target, draft=draft).result()
                assert result.token_ids == reference
                row = totals[(dataset, name)]
                s = result.stats
                row["proposed"] += s.proposed
                row["accepted"] += s.accepted
                row["cycles"] += s.cycles
                row["decode_s"] += s.decode_s
    print(f"| dataset | context unstable_share | acceptance | accepted/cycle | cycles | decode s (k={args.k}) |")
    print("|---|---|---|---|---|---|")
    for (dataset, name), row in totals.items():
        print(f"| {dataset} | {name} | {row['accepted'] / max(row['proposed'], 1):.1%} | "
              f"{row['accepted'] / max(row['cycles'], 1):.2f} | {int(row['cycles'])} | {row['decode_s']:.1f} |")


if __name__ == "__main__":
    main()
