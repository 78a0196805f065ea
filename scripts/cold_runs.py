"""Short cold runs as a new user makes them: one ``specfw run`` process per generation, wall-clock time.

For each prompt and round, interleaved: the target alone (``--baseline``), ``--k-policy adaptive`` cold
(a fresh model cache holding only the imported models: no priors), and ``--k-policy adaptive`` with the
priors earlier runs left (one cache kept across the whole measurement, seeded first by ``--seed-runs``
adaptive runs on other prompts). Each side keeps its best of ``--rounds`` for each figure: the decode rate
``tps``, the end-to-end rate (generated tokens / (``prompt_s`` + ``decode_s``)), the whole process's wall
time (start-up and model loading included) and its CPU time (less sensitive to other load on the machine);
each is printed as a ratio to the target alone's. Every adaptive run's token ids are checked against the
target alone's.

    python scripts/cold_runs.py                      # 6 prompts (pl-questions, en-prompts, pl-grammar), 48 tokens
    python scripts/cold_runs.py --prompts 2 --rounds 1 --out runs/cold.json
    specfw tune --cache-dir /tmp/tuned ...; python scripts/cold_runs.py --priors-cache /tmp/tuned --prompts 3

The imported models are linked (not copied, not imported again) from ``--models`` (default: the user's
cache, ``$SPECFW_CACHE`` or ``~/.cache/specfw``) into temporary caches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("gemma3-270m", "smollm2-135m-instruct")


def prompts(n: int, names: list[str], per_set: int | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """``n`` prompts taken in turn from the bundled sets (those that load), or the first ``per_set`` of each,
    and two more (each set's last) to seed the priors."""
    from specfw.study.datasets import load_dataset
    from specfw.errors import SpecfwError

    sets = []
    for name in names:
        try:
            sets.append([(f"{name}/{item.id}", item.prompt) for item in load_dataset(name)])
        except SpecfwError as exc:
            print(f"cold_runs: {name} left out: {exc}", file=sys.stderr)
    seeds = [s[-1][1] for s in sets][:2]
    if per_set is not None:
        return [item for s in sets for item in s[:per_set]], seeds
    chosen, i = [], 0
    while len(chosen) < n and any(i < len(s) for s in sets):
        chosen += [s[i] for s in sets if i < len(s)]
        i += 1
    return chosen[:n], seeds


def fresh_cache(models: Path) -> Path:
    cache = Path(tempfile.mkdtemp(prefix="specfw-cold-"))
    (cache / "models").mkdir()
    for name in MODELS:
        (cache / "models" / name).symlink_to(models / "models" / name)
    return cache


def run(prompt: str, cache: Path, tokens: int, *extra: str) -> dict:
    env = {**os.environ, "SPECFW_CACHE": str(cache)}
    cmd = ["specfw", "run", "--prompt", prompt, "--max-tokens", str(tokens), "--json", *extra]
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall, cpu1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    d = json.loads(out.stdout)
    d["wall_s"] = wall  # the whole process: start-up and model loading included
    d["cpu_s"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # less sensitive to other load
    d["e2e_tps"] = d["generated"] / (d["prompt_s"] + d["decode_s"])
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=6, help="prompts taken in turn from --sets")
    ap.add_argument("--sets", default="pl-questions,en-prompts,pl-grammar", help="comma-separated bundled sets")
    ap.add_argument("--per-set", type=int, default=None, help="the first N prompts of every set (instead of --prompts)")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed-runs", type=int, default=2, help="adaptive runs on other prompts that seed the priors")
    ap.add_argument("--models", type=Path, default=None, help="a cache holding the imported default pair")
    ap.add_argument("--out", type=Path, default=None, help="write every run's figures here as JSON")
    ap.add_argument("--priors-cache", type=Path, default=None,
                    help="a model cache whose priors file the priors side uses (e.g. after 'specfw tune', whose "
                    "recommendation then fills --drafter/--translator/--k); default: a fresh one, seeded")
    args = ap.parse_args()
    from specfw.models.store import cache_dir

    models = args.models or cache_dir()
    for name in MODELS:
        if not (models / "models" / name).exists():
            print(f"cold_runs: import the default pair first (specfw models import {name})", file=sys.stderr)
            return 2
    chosen, seeds = prompts(args.prompts, args.sets.split(","), args.per_set)
    warm = args.priors_cache or fresh_cache(models)
    for prompt in seeds[: args.seed_runs] if args.priors_cache is None else []:
        run(prompt, warm, args.tokens, "--k-policy", "adaptive")
    sides = ("baseline", "adaptive cold", "adaptive priors")
    rows, log = [], []
    for pid, prompt in chosen:
        best = {side: None for side in sides}
        for r in range(args.rounds):
            for side in sides:
                if side == "baseline":
                    d = run(prompt, fresh_cache(models), args.tokens, "--baseline")
                elif side == "adaptive cold":
                    d = run(prompt, fresh_cache(models), args.tokens, "--k-policy", "adaptive")
                else:
                    d = run(prompt, warm, args.tokens, "--k-policy", "adaptive")
                log.append({"prompt": pid, "round": r, "side": side, **{k: d[k] for k in (
                    "generated", "tps", "e2e_tps", "prompt_s", "decode_s", "wall_s", "cpu_s", "k_counts",
                    "token_ids")}})
                print(f"cold_runs: {pid} round {r + 1} {side}: {d['e2e_tps']:.2f} tok/s end to end, "
                      f"{d['tps']:.2f} decode, k {d['k_counts']}", file=sys.stderr)
                if best[side] is None or d["e2e_tps"] > best[side]["e2e_tps"]:
                    best[side] = {**d, "wall_min": (best[side] or d)["wall_min" if best[side] else "wall_s"],
                                  "cpu_min": (best[side] or d)["cpu_min" if best[side] else "cpu_s"]}
                best[side]["wall_min"] = min(best[side]["wall_min"], d["wall_s"])
                best[side]["cpu_min"] = min(best[side]["cpu_min"], d["cpu_s"])
        base = best["baseline"]
        for side in sides[1:]:
            assert best[side]["token_ids"] == base["token_ids"], f"{pid} {side}: output differs from the target alone"
        rows.append((pid, base, best["adaptive cold"], best["adaptive priors"]))
    # ratios to the target alone, each side's best of its rounds: end-to-end and decode rates (higher is better),
    # whole-process wall and CPU seconds (lower is better; CPU time is less sensitive to other load on the machine)
    keys = ("e2e", "decode", "wall", "cpu")
    print(f"{'prompt':<24} {'target alone':>12}  " + "  ".join(f"{side + ' ' + k:>18}" for side in ("cold", "priors")
                                                           for k in keys))
    ratios: dict[str, list[float]] = {f"{side} {k}": [] for side in ("cold", "priors") for k in keys}
    for pid, base, cold, warm_d in rows:
        cells = []
        for side, d in (("cold", cold), ("priors", warm_d)):
            r = {"e2e": d["e2e_tps"] / base["e2e_tps"], "decode": d["tps"] / base["tps"],
                 "wall": base["wall_min"] / d["wall_min"], "cpu": base["cpu_min"] / d["cpu_min"]}
            for k in keys:
                ratios[f"{side} {k}"].append(r[k])
                cells.append(f"{r[k]:>17.3f}x")
        print(f"{pid:<24} {base['e2e_tps']:>8.2f} t/s  " + "  ".join(cells))
    geo = {k: math.exp(sum(map(math.log, v)) / len(v)) for k, v in ratios.items()}
    print(f"{'geometric mean':<24} {'':>12}  " + "  ".join(f"{geo[k]:>17.3f}x" for k in ratios))
    # per set: the target alone's total generation time (prompt pass + decode) over each side's, same prompts
    totals: dict[str, dict[str, float]] = {}
    for pid, base, cold, warm_d in rows:
        t = totals.setdefault(pid.split("/")[0], {"n": 0, "base": 0.0, "cold": 0.0, "priors": 0.0})
        t["n"] += 1
        for side, d in (("base", base), ("cold", cold), ("priors", warm_d)):
            t[side] += d["prompt_s"] + d["decode_s"]
    print(f"\n{'set':<16} {'prompts':>7} {'cold':>8} {'priors':>8}   (the target alone's total time ÷ the side's)")
    for name, t in totals.items():
        print(f"{name:<16} {t['n']:>7} {t['base'] / t['cold']:>7.3f}x {t['base'] / t['priors']:>7.3f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": log, "geomean": geo, "per_set": totals, "tokens": args.tokens,
                                        "rounds": args.rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
