"""Cold runs as a user starts them: one ``specfw run`` process per generation, configs in alternating order.

    python scripts/cold_runs.py [--reps 4] [--max-tokens 48] [--emulate SHAPE] [--out runs.jsonl]

For each rep and prompt it starts ``specfw run --json`` once per config (the
target alone, ``context`` k = 2 by default, and with ``close=0``), forward on
even reps and reversed on odd ones, times each process from start to exit
(model loading included), checks that every config gave the target alone's
ids, and prints per config the summed process seconds and decode seconds.
Pin it to one core (``taskset -c 0``, ``OPENBLAS_NUM_THREADS=1``) for figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

PROMPTS = ["Jakie są największe miasta w Polsce?", "Explain why the sky is blue in two sentences."]
CONFIGS = {"alone": ["--baseline"], "default": [], "close=0": ["--translator-option", "close=0"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--emulate", help="a shadow shape behind the target (specfw run --emulate-target)")
    parser.add_argument("--out", help="write one JSON record per run here")
    args = parser.parse_args()
    specfw = shutil.which("specfw") or sys.exit("specfw is not on PATH: activate the venv it is installed in")
    rows = []
    for rep in range(args.reps):
        order = list(CONFIGS) if rep % 2 == 0 else list(reversed(CONFIGS))
        for prompt in PROMPTS:
            for name in order:
                cmd = [specfw, "run", "--prompt", prompt, "--max-tokens", str(args.max_tokens), "--json", "--k", "2",
                       "--translator", "context", *CONFIGS[name]]
                if args.emulate:
                    cmd += ["--emulate-target", args.emulate]
                t0 = time.perf_counter()
                d = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
                rows.append({"rep": rep, "prompt": prompt, "config": name, "wall_s": round(time.perf_counter() - t0, 3),
                             "prompt_s": round(d["prompt_s"], 3), "decode_s": round(d["decode_s"], 3),
                             "accepted": d["accepted"], "cycles": d["cycles"], "closing_cycles": d.get("closing_cycles"),
                             "token_ids": d["token_ids"]})
                print(f"rep {rep} {name:8} {prompt[:30]!r}: {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    for rep in range(args.reps):
        for prompt in PROMPTS:
            ids = {r["config"]: r["token_ids"] for r in rows if r["rep"] == rep and r["prompt"] == prompt}
            assert ids["default"] == ids["alone"] == ids["close=0"], f"a config differs from the target alone: {prompt}"
    if args.out:
        with open(args.out, "w") as out:
            out.writelines(json.dumps(r) + "\n" for r in rows)
    for name in CONFIGS:
        sel = [r for r in rows if r["config"] == name]
        print(f"{name:8} process {sum(r['wall_s'] for r in sel):.1f} s, decode {sum(r['decode_s'] for r in sel):.1f} s "
              f"({len(sel)} runs)")


if __name__ == "__main__":
    main()
