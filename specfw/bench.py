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

    from specfw.blas import blas_in_use
    from specfw.models import load_model
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
