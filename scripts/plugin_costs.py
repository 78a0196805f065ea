"""Per-cycle cost of each built-in plugin on the embedded pair (CPU): drafter, translation, target pass.

    python scripts/plugin_costs.py [--tokens 48] [--prompt TEXT]

One greedy run per row (after a warm-up), same prompt and token count; the
columns are milliseconds per cycle from ``RunStats`` (draft_s, translate_s,
verify_s divided by cycles), plus acceptance, re-forwarded ids (rewind) and
tokens per second. Every row's output is checked against the target alone.
"""

from __future__ import annotations

import argparse

import specfw  # noqa: F401  (loads an optimized BLAS before MLX)
from specfw.config import RunConfig
from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET
from specfw.models.loading import load_model
from specfw.run import Run

ROWS = [
    ("target alone", dict(baseline=True)),
    ("mlx + none", dict(translator="none")),
    ("mlx + naive", dict(translator="naive")),
    ("mlx + context", dict(translator="context")),
    ("mlx + tli", dict(translator="tli")),
    ("mlx + context, rewind", dict(translator="context", cache_sync="rewind")),
    ("mlx + context, adaptive k", dict(translator="context", k_policy="adaptive")),
    ("lookup (no draft model)", dict(drafter="lookup", k=4)),
    ("mlx + tli, temp 0.8 (speculative)", dict(translator="tli", temp=0.8)),
    ("mlx + context, temp 0.8 (sample)", dict(translator="context", temp=0.8)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--prompt", default="Stolicą Polski jest Warszawa, a największą rzeką")
    args = parser.parse_args()
    target, draft = load_model(DEFAULT_TARGET), load_model(DEFAULT_DRAFT)
    base = dict(prompt=args.prompt, max_tokens=args.tokens, k=2)
    reference = Run(RunConfig(**base, baseline=True), target=target).result().token_ids
    print(f"target {DEFAULT_TARGET}, drafter {DEFAULT_DRAFT}, {args.tokens} tokens, k=2 unless stated\n")
    print("| plugins | cycles | draft ms/cycle | translate ms/cycle | target pass ms/cycle | acceptance | tok/s |")
    print("|---|---|---|---|---|---|---|")
    for label, extra in ROWS:
        config = RunConfig(**{**base, **extra})
        uses_draft = not config.baseline and config.drafter == "mlx"
        Run(config, target=target, draft=draft if uses_draft else None).result()  # warm-up
        result = Run(config, target=target, draft=draft if uses_draft else None).result()
        s = result.stats
        if config.temp == 0:
            assert result.token_ids == reference, label
        per = (lambda x: 1000 * x / s.cycles) if s.cycles else (lambda x: 0.0)
        print(f"| {label} | {s.cycles} | {per(s.draft_s):.1f} | {per(s.translate_s):.2f} | {per(s.verify_s):.1f} | "
              f"{s.acceptance_rate:.0%} | {s.tps:.1f} |")


if __name__ == "__main__":
    main()
