"""``specfw bench``: side-by-side speed measurements, every ratio taken in one run.

``overhead`` compares specfw with mlx-lm on the same models, prompt, token
count and k:

* ``ar_vs_mlx_lm``: specfw ``--baseline`` tokens/s ÷ mlx-lm ``generate_step`` tokens/s;
* ``sd_vs_mlx_lm``: specfw with a same-tokenizer drafter (the ``identity``
  translator) ÷ mlx-lm ``speculative_generate_step`` with that drafter.

The two sides alternate for ``rounds`` rounds and each keeps its best time,
so a slow moment of the machine hits both alike. Both sides' token ids are
checked to be equal first: a ratio between different outputs means nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

from specfw.config import RunConfig
from specfw.errors import SpecfwError

DEFAULT_PROMPT = "Stolicą Polski jest Warszawa. Najdłuższą rzeką w Polsce jest"
GOALS = {"ar_vs_mlx_lm": 0.98, "sd_vs_mlx_lm": 1.00}


@dataclass
class OverheadResult:
    """What ``specfw bench overhead`` measured; times are the best of ``rounds``."""

    target: str
    draft: str
    tokens: int
    k: int
    rounds: int
    blas: str
    specfw_ar_s: float
    mlx_lm_ar_s: float
    specfw_sd_s: float
    mlx_lm_sd_s: float
    sd_acceptance: float
    differing_outputs: list[str]
    ar_vs_mlx_lm: float
    sd_vs_mlx_lm: float

    def to_dict(self) -> dict:
        return {**asdict(self), "goals": GOALS}


def _best_times(functions: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    best = {name: float("inf") for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def overhead(target_name: str, draft_name: str | None = None, tokens: int = 64, k: int = 2, rounds: int = 5,
             prompt: str = DEFAULT_PROMPT, log=None) -> OverheadResult:
    """Measure specfw against mlx-lm; ``draft_name`` None drafts with the target itself (same tokenizer)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step, speculative_generate_step

    from specfw.models.blas import blas_in_use
    from specfw.models.loading import load_model
    from specfw.run import Run, prompt_ids
    from specfw.tokenizers import same_vocabulary

    target = load_model(target_name, log=log)
    draft = target if draft_name is None else load_model(draft_name, log=log)
    if not same_vocabulary(target.tokenizer, draft.tokenizer):
        raise SpecfwError(
            f"bench overhead compares with mlx-lm, which needs one tokenizer: '{draft.source}' and "
            f"'{target.source}' differ; give a same-tokenizer --draft or none (the target drafts itself)"
        )
    ids = prompt_ids(target.tokenizer, prompt)

    def specfw_ar():
        return Run(RunConfig(prompt=prompt, baseline=True, max_tokens=tokens), target=target).result()

    def mlx_lm_ar():
        return [int(t) for t, _ in generate_step(mx.array(ids), target.model, max_tokens=tokens)]

    def specfw_sd():
        return Run(RunConfig(prompt=prompt, k=k, max_tokens=tokens), target=target, draft=draft).result()

    def mlx_lm_sd():
        steps = speculative_generate_step(mx.array(ids), target.model, draft.model, num_draft_tokens=k,
                                          max_tokens=tokens)
        return [int(t) for t, _, _ in steps]

    reference = mlx_lm_ar()
    ar, sd = specfw_ar(), specfw_sd()  # also warms up every path
    outputs = {"mlx_lm_ar": reference[:tokens], "specfw_sd": sd.token_ids, "mlx_lm_sd": mlx_lm_sd()[:tokens]}
    # Equal unless a near-tie flips under floating-point reordering (batched vs single-row matmuls).
    differing = [name for name, ids in outputs.items() if ids != ar.token_ids]
    if len(ar.token_ids) < tokens:
        raise SpecfwError(f"the target stopped after {len(ar.token_ids)} tokens; use a prompt that runs {tokens}")
    best = _best_times({"specfw_ar": specfw_ar, "mlx_lm_ar": mlx_lm_ar, "specfw_sd": specfw_sd,
                        "mlx_lm_sd": mlx_lm_sd}, rounds)
    return OverheadResult(
        target=target.source,
        draft=draft.source,
        tokens=tokens,
        k=k,
        rounds=rounds,
        blas=blas_in_use(),
        specfw_ar_s=best["specfw_ar"],
        mlx_lm_ar_s=best["mlx_lm_ar"],
        specfw_sd_s=best["specfw_sd"],
        mlx_lm_sd_s=best["mlx_lm_sd"],
        sd_acceptance=sd.stats.acceptance_rate,
        differing_outputs=differing,
        # equal token counts: a time ratio is the inverse tps ratio
        ar_vs_mlx_lm=best["mlx_lm_ar"] / best["specfw_ar"],
        sd_vs_mlx_lm=best["mlx_lm_sd"] / best["specfw_sd"],
    )


def format_overhead(result: OverheadResult) -> str:
    lines = [
        f"target {result.target}, drafter {result.draft}, {result.tokens} tokens, k={result.k}, "
        f"best of {result.rounds}, BLAS: {result.blas}",
        f"target alone   specfw {result.specfw_ar_s:.3f}s  mlx-lm {result.mlx_lm_ar_s:.3f}s  "
        f"ar_vs_mlx_lm = {result.ar_vs_mlx_lm:.3f} (goal >= {GOALS['ar_vs_mlx_lm']})",
        f"speculative    specfw {result.specfw_sd_s:.3f}s  mlx-lm {result.mlx_lm_sd_s:.3f}s  "
        f"sd_vs_mlx_lm = {result.sd_vs_mlx_lm:.3f} (goal >= {GOALS['sd_vs_mlx_lm']}; "
        f"acceptance {result.sd_acceptance:.1%})",
    ]
    if result.differing_outputs:
        lines.append(f"note: {', '.join(result.differing_outputs)} differed from specfw's target-alone ids "
                     "(a floating-point near-tie): same token count, but the draft acceptance pattern may differ")
    return "\n".join(lines)


# --------------------------------------------------------------------------- costs: the paper's r and c, measured


@dataclass
class CostResult:
    """One target (real or emulated) against one drafter: pass times and the cost model's r and c.

    ``target_ms[n]``: median seconds × 1000 of a target pass over n ids after a warm context of ``context``
    ids; ``draft_ms``: a drafter step (one id). ``r`` = draft step ÷ target step (n = 1);
    ``c[k]`` = (pass over k + 1 ids − one-id pass) ÷ (k² × one-id pass): the verification overhead that grows
    with k in the paper's cost model; ``alpha_star[k]`` = ((k + 1) r + c k²) / k, its break-even acceptance.
    """

    target: str
    draft: str
    blas: str
    context: int
    rounds: int
    target_ms: dict[int, float]
    draft_ms: float
    r: float
    c: dict[int, float]
    alpha_star: dict[int, float]

    def to_dict(self) -> dict:
        return asdict(self)


def _pass_ms(model, ids: list[int], widths: list[int], rounds: int) -> dict[int, float]:
    """Median milliseconds of a forward over n ids, for n in ``widths``, each time from the same warm context."""
    import statistics

    import mlx.core as mx
    from mlx_lm.models.cache import trim_prompt_cache

    from specfw.models.forward import forward_logits, prefill
    from specfw.models.kv_cache import make_trimmable_cache

    cache = make_trimmable_cache(model)
    prefill(model, cache, ids[:-8])
    tail = ids[-8:]
    times: dict[int, list[float]] = {n: [] for n in widths}
    for _ in range(rounds + 1):  # the first round warms every width up and is not counted
        for n in widths:
            start = time.perf_counter()
            mx.eval(forward_logits(model, cache, tail[:n], n))
            times[n].append(time.perf_counter() - start)
            trim_prompt_cache(cache, n)
    return {n: 1000 * statistics.median(t[1:]) for n, t in times.items()}


COSTS_TEXT = ("Kraków leży nad Wisłą i przez ponad pięćset lat był stolicą Polski. The city's old town, with its "
              "market square and the Wawel castle, was one of the first places on UNESCO's World Heritage list. ")


def costs(target_name: str, draft_name: str, shapes: list[str | None], ks: list[int], rounds: int = 7,
          context: int = 64, log=None) -> list[CostResult]:
    """Measure r and c for the real target (``None`` in ``shapes``) and each emulated shape, against one drafter."""
    import gc

    import mlx.core as mx

    from specfw.models.blas import blas_in_use
    from specfw.models.emulation import shadowed
    from specfw.models.loading import load_model
    from specfw.run import prompt_ids

    if context < 16:
        raise SpecfwError(f"--context must be at least 16 ids, got {context}")
    real = load_model(target_name, log=log)
    draft = load_model(draft_name, log=log)
    widths = sorted({1, *(k + 1 for k in ks)})
    if max(widths) > 8:
        raise SpecfwError(f"k must be at most 7 for bench costs (a pass over k + 1 <= 8 ids), got {max(ks)}")

    def ids_for(tokenizer) -> list[int]:
        text = COSTS_TEXT * (1 + context // 16)
        return prompt_ids(tokenizer, text)[:context]

    draft_ms = _pass_ms(draft.model, ids_for(draft.tokenizer), [1], rounds)[1]
    results = []
    for shape in shapes:
        if log:
            log(f"bench costs: {'the real target' if shape is None else 'emulated ' + shape} ...")
        target = real if shape is None else shadowed(real, shape)
        target_ms = _pass_ms(target.model, ids_for(target.tokenizer), widths, rounds)
        one = target_ms[1]
        r = draft_ms / one
        c = {k: (target_ms[k + 1] - one) / (k * k * one) for k in ks}
        results.append(CostResult(target.source, draft.source, blas_in_use(), context, rounds, target_ms, draft_ms,
                                  r, c, {k: ((k + 1) * r + c[k] * k * k) / k for k in ks}))
        del target
        gc.collect()
        mx.clear_cache()
    return results


def format_costs(results: list[CostResult]) -> str:
    ks = sorted(results[0].c) if results else []
    header = ["target", "T(1) ms", *(f"T({k + 1}) ms" for k in ks), "draft step ms", "r",
              *(f"c (k={k})" for k in ks), *(f"α* k={k}" for k in ks)]
    rows = [[res.target, f"{res.target_ms[1]:.1f}", *(f"{res.target_ms[k + 1]:.1f}" for k in ks),
             f"{res.draft_ms:.1f}", f"{res.r:.3f}", *(f"{res.c[k]:.3f}" for k in ks),
             *(f"{res.alpha_star[k]:.0%}" if res.alpha_star[k] <= 1 else ">100%" for k in ks)] for res in results]
    lines = [f"drafter {results[0].draft}, BLAS {results[0].blas}, context {results[0].context} ids, "
             f"median of {results[0].rounds} rounds" if results else "no results",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("α* = ((k + 1) r + c k²) / k: the paper's break-even acceptance (its Eq. 6) with these r and c; "
                 "a target named +shadow:SHAPE is emulated (random-weight shadow of that shape, real output)")
    return "\n".join(lines)
