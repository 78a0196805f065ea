"""Per-run counters and timings, counted the way the reference paper counts them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RunStats:
    """What one generation did.

    ``proposed``: target-vocabulary ids sent to verification (after
    translation); ``accepted``: how many of them were accepted and emitted
    (``sum(result.from_draft)``, what ``acceptance_rate = accepted /
    proposed`` counts); ``verified_accepted``: how many the verifier accepted,
    including ids the last cycle then did not emit (cut by ``max_tokens``, or
    the stop id and the ids after it), so ``verified_accepted >= accepted``;
    ``cycles``: target passes after the first token, plus the prompt pass
    when the drafter drafted for it (the first cycle drafts from the prompt;
    ``prompt_pass_drafted`` says whether it did);
    ``zero_new_cycles``: cycles where the drafter proposed but translation
    left no target id to verify. ``prompt_s`` is the time to the first
    generated token, ``decode_s`` the time from the first to the last one, and
    ``tps`` is ``(generated - 1) / decode_s`` (prompt excluded, as the paper).
    ``k_counts``: how many cycles drafted each k (0: the k policy skipped
    drafting). ``host_syncs``: points where the scheduler waits for the device
    to hand back ids (the drafter's proposals, the verifier's decision, the
    target-alone step's id), counted as they happen; per cycle it is 2 with a
    model drafter, 1 without drafting or with a model-free drafter (lookup). ``draft_s``, ``translate_s`` and
    ``verify_s`` add up, over the cycles after the prompt pass, the drafter's
    propose calls, both translations, and the target passes with
    verification (the target-alone path: its steps). ``sources``: per proposal
    source (``draft``: the drafter's vocabulary, translated; ``target``: a
    combined drafter's target-vocabulary part), the verified cycles, proposed,
    accepted (emitted) and verified_accepted ids. ``fallback_cycles``: cycles a string-level verifier
    (``slrs``) verified with the ``sample`` rule because its ψ computation
    would have exceeded its cost bound; ``psi_s``: the seconds it spent
    computing ψ (branch pass included), inside ``verify_s``. ``reused_proposals``:
    cycles whose proposal was left over from the previous cycle (drafted
    ahead during its verification with ``--draft-ahead``, or proposed past
    what the target accepted while the accepted text still agrees with it),
    so the drafter was not called. ``closing_cycles``: cycles whose
    translation ended on an open id (one the text may go on into) and that drafted past k to close it
    (``context``'s option ``close``); ``closing_ids``: the draft ids drafted for that.
    """

    cycles: int = 0
    proposed: int = 0
    accepted: int = 0
    verified_accepted: int = 0
    generated: int = 0
    zero_new_cycles: int = 0
    prompt_tokens: int = 0
    prompt_s: float = 0.0
    decode_s: float = 0.0
    finish_reason: str = ""
    k_counts: dict[int, int] = field(default_factory=dict)
    draft_s: float = 0.0
    translate_s: float = 0.0
    verify_s: float = 0.0
    host_syncs: int = 0
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    reused_proposals: int = 0
    fallback_cycles: int = 0
    psi_s: float = 0.0
    prompt_pass_drafted: bool = False
    closing_cycles: int = 0
    closing_ids: int = 0

    def count_source(self, source: str, proposed: int, verified_accepted: int) -> None:
        """Add one verified cycle to ``sources[source]`` (cycles, proposed, verified_accepted); its emitted
        accepted ids are added one at a time by :meth:`count_emitted`."""
        counts = self._source(source)
        counts["cycles"] += 1
        counts["proposed"] += proposed
        counts["verified_accepted"] += verified_accepted

    def count_emitted(self, source: str) -> None:
        """One accepted draft id was emitted: add it to ``accepted`` and ``sources[source]["accepted"]``."""
        self.accepted += 1
        self._source(source)["accepted"] += 1

    def _source(self, source: str) -> dict[str, int]:
        return self.sources.setdefault(source, {"cycles": 0, "proposed": 0, "accepted": 0, "verified_accepted": 0})

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tps(self) -> float:
        return (self.generated - 1) / self.decode_s if self.generated > 1 and self.decode_s > 0 else 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["acceptance_rate"] = self.acceptance_rate
        out["tps"] = self.tps
        return out
