"""The evaluation record: one JSONL line per (prompt, condition), written by ``specfw eval``.

Every number in an evaluation report is computed from these records alone.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict


class EvalRecord(BaseModel):
    """One run of one condition on one prompt.

    ``condition`` is ``"baseline"`` for the target alone, else
    ``"<drafter>/<translator>/k<k>/<cache_sync>"``. ``speedup`` is this run's
    tps / the baseline's tps on the same prompt (1.0 for the baseline itself).
    ``lossless`` says whether the token ids equal the baseline's.
    ``target_bytes`` / ``draft_bytes`` are the models' weight bytes as loaded
    (the cost model's r = draft_bytes / target_bytes). ``repetition`` is the
    share of the baseline's generated ids that continue a 4-gram already in the
    prompt or the earlier output (:func:`specfw.study.repetition.repetition_share`).
    """

    model_config = ConfigDict(extra="forbid")

    dataset: str
    prompt_id: str
    condition: str
    target: str
    drafter: Optional[str] = None
    translator: Optional[str] = None
    k: Optional[int] = None
    cache_sync: Optional[str] = None
    max_tokens: int
    generated: int
    cycles: int
    proposed: int
    accepted: int  # accepted draft ids that were emitted; acceptance_rate = accepted / proposed
    acceptance_rate: float
    tps: float
    prompt_s: float
    decode_s: float
    speedup: float
    lossless: bool
    target_bytes: int
    draft_bytes: Optional[int] = None
    output_sha256: Optional[str] = None  # of the generated token ids: how resumed runs check losslessness
    fallback_cycles: int = 0  # cycles a string-level verifier (slrs) verified with the sample rule, for cost
    psi_s: float = 0.0  # seconds slrs spent computing psi
    # the baseline's specfw.study.repetition.repetition_share on this prompt (prompt ids + the target alone's ids, n = 4),
    # copied to every record of the prompt; None in records written before it was added
    repetition: Optional[float] = None
    # ids the verifier accepted, including those the last cycle did not emit (cut by max_tokens, or the stop id and
    # the ids after it): >= accepted; None in records written before it was added
    verified_accepted: Optional[int] = None
    # cycles that drafted past k to close an open last id (context's option close); 0 in records written before it
    closing_cycles: int = 0

    @property
    def is_baseline(self) -> bool:
        return self.condition == "baseline"

    def key(self) -> tuple[str, str, str]:
        """What makes a record unique in an output folder (used to resume)."""
        return (self.dataset, self.prompt_id, self.condition)


def condition_name(drafter: str, translator: str, k: int, cache_sync: str) -> str:
    return f"{drafter}/{translator}/k{k}/{cache_sync}"
