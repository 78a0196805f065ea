"""Built-in k policies: ``fixed`` (always ``--k``) and ``adaptive`` (the paper's cost model, measured online).

A k policy is asked, before every cycle, how many draft tokens to propose
(0: no drafting this cycle, the target steps alone), and is told afterwards
what the cycle cost and yielded (:class:`specfw.protocols.CycleReport`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from specfw import priors
from specfw.hookspecs import hookimpl
from specfw.protocols import CycleReport, KPolicySetup

# Before the target pass has been measured at two widths: a pass over n ids is taken to cost
# 1 + SLOPE_GUESS (n - 1) single steps (on this repo's CPU the default target measured about 0.15-0.25).
SLOPE_GUESS = 0.25
# Pseudo-cycles behind each position's own acceptance estimate, at the position before it (the first: at α).
POSITION_PRIOR = 2.0
# What a generation keeps of the per-position counts earlier generations left: how a text's acceptance runs is the
# text's own, so a new prompt starts near the pooled α instead of drafting far ahead on what an easier text accepted
# (simulated, five texts in a row: 96% of each text's best k's rate with 0.1, 92% keeping every count).
POSITION_CARRY = 0.1


class FixedK:
    """Always proposes ``--k`` tokens: the paper's setting."""

    name = "fixed"

    def __init__(self, setup: KPolicySetup) -> None:
        self.k = setup.config.k

    def choose(self, source: str = "draft") -> int:
        return self.k

    def observe(self, report: CycleReport) -> None:
        pass


@dataclass
class _SourceEstimate:
    """What the adaptive policy knows about one proposal source (the drafter's model, or a target-vocabulary part)."""

    draft_per_token: float | None = None  # seconds per draft token asked for
    translate_s: float = 0.0
    accepted: float = 1.0  # pseudo-counts: start from α = 0.5
    rejected: float = 1.0
    ratio: float = 1.0  # target ids proposed per draft token
    explore_cost: float = 0.0  # seconds explorations cost beyond a plain step, in total
    explored: int = 0
    explore_ids: int = 0  # ids the drafter forwarded in them (catch-up and draft steps)
    # per proposed position i (0-based): [cycles that reached it (every earlier one accepted), cycles that accepted it]
    positions: list[list[float]] = field(default_factory=list)

    def explore_forecast(self, catch_up: int | None, first: float = 0.0) -> float:
        """Seconds the next exploration is expected to cost beyond a plain step (``first`` before the first)."""
        if not self.explored:
            return first
        if catch_up is None or not self.explore_ids:
            return self.explore_cost / self.explored
        # the drafter's catch-up dominates an exploration's cost: scale by the ids it would forward
        return self.explore_cost / self.explore_ids * (catch_up + 1)

    def alpha(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def position_alphas(self, n: int) -> list[float]:
        """P(position i accepted | every earlier one accepted) for i < ``n``.

        Acceptance is bursty (an easy stretch of text accepts whole proposals, a hard one rejects the first
        id), so the later positions of a proposal are accepted more often than the first: one α for every
        position under-predicts what a long proposal yields. Each position's own counts are shrunk by
        ``POSITION_PRIOR`` pseudo-cycles towards the position before it (the first towards the overall α),
        so a position rarely or never reached is taken to behave like the last one measured.
        """
        out, prior = [], min(self.alpha(), 0.999)
        for i in range(n):
            reached, accepted = self.positions[i] if i < len(self.positions) else (0.0, 0.0)
            prior = min((accepted + POSITION_PRIOR * prior) / (reached + POSITION_PRIOR), 0.999)
            out.append(prior)
        return out

    def expected_tokens(self, m: float) -> float:
        """Tokens a cycle verifying ``m`` proposed ids yields on average (the accepted ones and the target's own).

        ``1 + Σ_{j=1..m} Π_{i<j} P_i`` with P_i from :meth:`position_alphas`; with one α for every position this
        is the paper's ``(1 − α^(m+1)) / (1 − α)``. A fractional ``m`` (translation changes the count of ids)
        is interpolated between its neighbours.
        """
        whole = int(m)
        total, reach = 1.0, 1.0
        for i, p in enumerate(self.position_alphas(whole + 1)):
            if i == whole:
                return total + (m - whole) * reach * p
            reach *= p
            total += reach
        return total

    def observe_positions(self, proposed: int, accepted: int, decay: float) -> None:
        """Count a verified proposal of ``proposed`` ids of which the first ``accepted`` were accepted."""
        while len(self.positions) < proposed:
            self.positions.append([0.0, 0.0])
        for i, counts in enumerate(self.positions):
            counts[0] *= decay
            counts[1] *= decay
            if i < proposed and i <= accepted:
                counts[0] += 1
                counts[1] += 1 if i < accepted else 0


@dataclass
class _CostModel:
    """What the adaptive policy has learnt about one pair of models and plugins."""

    sources: dict[str, _SourceEstimate] = field(default_factory=dict)
    # weighted sums for the least-squares line t_v(n) = a + b n
    w: float = 0.0
    wn: float = 0.0
    wnn: float = 0.0
    wt: float = 0.0
    wnt: float = 0.0
    elapsed: float = 0.0  # seconds of every observed cycle

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "_CostModel":
        """A cost model from a priors entry; a missing or damaged value takes its starting value."""
        f = priors.finite
        sources = {}
        raw_sources = data.get("sources")
        for name, raw in (raw_sources.items() if isinstance(raw_sources, dict) else ()):
            if not isinstance(raw, dict):
                continue
            per_token = raw.get("draft_per_token")
            sources[str(name)] = _SourceEstimate(
                draft_per_token=None if per_token is None else f(per_token, 0.0) or None,
                translate_s=f(raw.get("translate_s"), 0.0), accepted=f(raw.get("accepted"), 1.0, 1e-6),
                rejected=f(raw.get("rejected"), 1.0, 1e-6), ratio=f(raw.get("ratio"), 1.0, 1e-6),
                explore_cost=f(raw.get("explore_cost"), 0.0), explored=int(f(raw.get("explored"), 0)),
                explore_ids=int(f(raw.get("explore_ids"), 0)), positions=_positions(raw.get("positions")))
        return cls(sources=sources, **{name: f(data.get(name), 0.0) for name in ("w", "wn", "wnn", "wt", "wnt",
                                                                                "elapsed")})


def _positions(raw) -> list[list[float]]:
    """Per-position counts from a priors entry; anything damaged is dropped (the counts restart)."""
    if not isinstance(raw, list):
        return []
    out = []
    for pair in raw[:64]:
        if not (isinstance(pair, list) and len(pair) == 2):
            return []
        reached, accepted = priors.finite(pair[0], -1.0), priors.finite(pair[1], -1.0)
        if reached < 0 or accepted < 0 or accepted > reached:
            return []
        out.append([reached, accepted])
    return out


class AdaptiveK:
    """Chooses k in 0..``--k-max`` each cycle, per proposal source, to maximise expected tokens per second.

    For each source (``draft``: the drafter's model, translated; ``target``: a
    combined drafter's target-vocabulary part such as ``lookup``) it keeps
    running estimates (exponentially weighted, so they follow the text) of:

    * the cost per proposed draft token ``t_d`` (propose time / k, the
      drafter's catch-up included) and the translation cost ``t_x``;
    * the per-token acceptance probability ``α`` (accepted / (accepted +
      rejections)), and for each position i of a proposal ``P_i``, how often
      it was accepted when every earlier one was (acceptance comes in bursts,
      so later positions are accepted more often than the first), shrunk
      towards ``α`` where it has been reached rarely; and ``ρ``, target ids
      proposed per draft token (translation changes the count);

    and, shared by all sources, the target pass cost as a line in the number of
    fed ids, ``t_v(n) = a + b n``, fitted by weighted least squares on every
    cycle (plain steps included).

    With these, a cycle proposing k draft tokens verifies ``m = ρk`` target ids
    and yields ``E(k) = 1 + Σ_{j≤m} Π_{i<j} P_i`` tokens on average (with
    every ``P_i = α``, the paper's i.i.d. ``(1 − α^(m+1)) / (1 − α)``) at cost
    ``k t_d + t_x + t_v(m + 1)``; k = 0 yields
    one token at cost ``t_v(1)``. It picks the k with the most tokens per
    second, from the first cycle (the prompt pass included).

    Cold start (nothing learnt for the pair, in this process or in the priors
    file): it does not draft blindly at ``--k``. Each source's cost per draft
    token is taken from ``KPolicySetup.draft_cost`` (the drafter's weight
    bytes over the target's; 0 for a model-free drafter or a target-vocabulary
    source such as ``lookup``), its acceptance from the neutral prior α = 0.5,
    and a target pass over n ids as ``1 + SLOPE_GUESS (n − 1)`` steps, so a
    drafter half the target's size does not draft (k = 0: plain steps, the
    prompt pass included) while ``lookup`` or a tiny drafter does from the
    first token; measured values replace the guesses cycle by cycle. Without
    a ``draft_cost`` (a policy built by hand) it starts at ``--k``.

    While k = 0 wins, it still
    explores with k = 1 now and then, so that a text that became easy to draft
    is noticed; what explorations cost beyond the plain steps they replace is
    bounded: after at least ``explore_every`` (8) idle cycles, a source is
    explored only while its explorations, this one included, cost at most
    ``explore_budget`` (0.5%) of the time spent so far. This one is forecast
    from the ids the drafter would forward first (its catch-up: the text it
    has not seen, told by the scheduler as ``catch_up``) at the cost per
    forwarded id that earlier explorations showed (the first: the drafter's
    cost per token times ``1 + SLOPE_GUESS × catch-up``, or nothing when the
    catch-up is not told), so a cheap exploration is taken and a long catch-up
    waits.

    What it learns is kept for the rest of the process per ``KPolicySetup.pair``
    (the models and plugins of the run), so later generations on the same pair
    (an eval sweep, a server) start from the estimates, not from ``--k``; and,
    with ``KPolicySetup.priors``, in the priors file (:mod:`specfw.priors`),
    read when the pair is first used in a process and written after each
    generation (:meth:`finish`), so the next process starts from them too, as
    does the exploration budget (the time spent and what explorations cost).
    """

    name = "adaptive"
    DECAY = 0.95
    explore_every = 8
    explore_budget = 0.005
    _learnt: dict[str, _CostModel] = {}

    def __init__(self, setup: KPolicySetup) -> None:
        config = setup.config
        self.k_max = max(config.k_max, 1)
        self.k = min(config.k, self.k_max)
        self.pair = setup.pair
        self.use_priors = bool(getattr(setup, "priors", False)) and bool(setup.pair)
        # Each source's draft cost per token in target steps, assumed until it is measured: a target-vocabulary
        # source needs no model; the drafter's comes from the run (parameter bytes over the target's; 0 for a
        # model-free drafter).
        # None: unknown, the policy starts at --k as before.
        self.hints: dict[str, float | None] = {"target": 0.0, "draft": getattr(setup, "draft_cost", None)}
        self.started_from = "nothing"
        if setup.pair and setup.pair in self._learnt:
            self.model, self.started_from = self._learnt[setup.pair], "this process"
        else:
            stored = priors.load_cost_model(setup.pair) if self.use_priors else None
            self.model = _CostModel.from_dict(stored) if stored is not None else _CostModel()
            if stored is not None:
                self.started_from = "the priors file"
            if setup.pair:
                self._learnt[setup.pair] = self.model
        for est in self.model.sources.values():
            for counts in est.positions:
                counts[0] *= POSITION_CARRY
                counts[1] *= POSITION_CARRY
        self._exploring: set[str] = set()
        self._idle: dict[str, int] = {}
        self._since_probe = 0  # cycles since a proposal one id longer than the best was tried
        self._observed = 0

    @property
    def note(self) -> str:
        """How this policy started, for the run's notes."""
        if self.started_from != "nothing":
            return f"adaptive k: cost model from {self.started_from}"
        hint = self.hints["draft"]
        if hint is None:
            return "adaptive k: nothing measured yet, starting at --k"
        return (f"adaptive k: cold start (no priors), the drafter taken to cost {hint:.2f} target steps per token "
                f"and half its tokens accepted until measured; first k {self.choose_preview()}")

    def source(self, name: str = "draft") -> _SourceEstimate:
        return self.model.sources.setdefault(name, _SourceEstimate())

    # -- estimates ---------------------------------------------------------

    def alpha(self, source: str = "draft") -> float:
        return self.source(source).alpha()

    def verify_cost(self, n: float) -> float | None:
        """Estimated seconds of a target pass over ``n`` ids, or None before any observation."""
        m = self.model
        if m.w == 0:
            return None
        mean_n, mean_t = m.wn / m.w, m.wt / m.w
        var = m.wnn / m.w - mean_n**2
        slope = (m.wnt / m.w - mean_n * mean_t) / var if var > 1e-9 else 0.0
        if slope < 0 or var <= 1e-9:
            # one width seen so far (or noise): assume the cost per id it implies, the safe guess on any device
            slope = max(slope, 0.0) if var > 1e-9 else mean_t / max(mean_n, 1.0) * SLOPE_GUESS
        return max(mean_t + slope * (n - mean_n), 1e-9)

    def expected_rate(self, k: int, source: str = "draft") -> float | None:
        """Expected generated tokens per second when ``source`` proposes ``k`` draft tokens.

        Before anything is measured, in target steps per second: a target pass over n ids is taken to cost
        ``1 + SLOPE_GUESS (n - 1)`` steps and a draft token its hint (see ``hints``); a source not yet
        measured uses its hint. None: nothing to go on (no hint), the starting k is kept.
        """
        base = self.verify_cost(1)
        measured = base is not None
        hint = self.hints.get(source)
        if not measured:
            if hint is None:
                return None
            base = 1.0
        if k == 0:
            return 1.0 / base
        est = self.source(source)
        per_token = est.draft_per_token if measured else None
        if per_token is None:
            if hint is None:
                return None
            per_token = hint * base
        m = est.ratio * k
        tokens = est.expected_tokens(m)
        verify = self.verify_cost(m + 1) if measured else 1.0 + SLOPE_GUESS * m
        cost = k * per_token + est.translate_s + verify
        return tokens / cost

    def _first_explore_forecast(self, source: str, catch_up: int | None) -> float:
        """What a source's first exploration is expected to cost: its drafter's catch-up, at a pass's cost line."""
        base = self.verify_cost(1)
        est = self.source(source)
        per_token = est.draft_per_token if est.draft_per_token is not None else (
            None if self.hints.get(source) is None or base is None else self.hints[source] * base)
        if catch_up is None or per_token is None:
            return 0.0
        return per_token * (1.0 + SLOPE_GUESS * catch_up)

    def choose_preview(self, source: str = "draft") -> int:
        """The k the next cycle would get, without counting it as a cycle."""
        rates = {k: self.expected_rate(k, source) for k in range(0, self.k_max + 1)}
        if any(r is None for r in rates.values()):
            return self.k
        return max(rates, key=lambda k: (rates[k], -k))

    # -- protocol ----------------------------------------------------------

    def choose(self, source: str = "draft", catch_up: int | None = None) -> int:
        est = self.source(source)
        rates = {k: self.expected_rate(k, source) for k in range(0, self.k_max + 1)}
        if any(r is None for r in rates.values()):
            return self.k  # not enough measured yet: keep the starting k
        best = max(rates, key=lambda k: (rates[k], -k))
        if best:
            self._idle[source] = 0
            return self._probe_longer(est, best)
        self._idle[source] = self._idle.get(source, 0) + 1
        forecast = est.explore_forecast(catch_up, first=self._first_explore_forecast(source, catch_up))
        within_budget = est.explore_cost + forecast <= self.explore_budget * self.model.elapsed
        if self._idle[source] >= self.explore_every and within_budget:
            self._idle[source] = 0
            self._exploring.add(source)
            return 1
        return 0

    def _probe_longer(self, est: _SourceEstimate, best: int) -> int:
        """``best``, or one more every ``explore_every`` cycles while the position past it is barely measured.

        A position the policy never proposes is never measured, so a text whose later positions would be
        accepted more often than the first (see :meth:`_SourceEstimate.position_alphas`) would keep it at a short
        k; one id longer now and then costs one draft token and one verified id, and stops once that position
        has ``POSITION_PRIOR`` cycles of its own.
        """
        self._since_probe += 1
        m = int(est.ratio * best)  # the first position a longer proposal would add
        reached = est.positions[m][0] if m < len(est.positions) else 0.0
        if best < self.k_max and reached < POSITION_PRIOR and self._since_probe >= self.explore_every:
            self._since_probe = 0
            return best + 1
        return best

    def finish(self) -> None:
        """The generation ended: keep what was learnt in the priors file (unless priors are off)."""
        if self.use_priors and self._observed:
            priors.save_cost_model(self.pair, self.model.as_dict())

    def observe(self, report: CycleReport) -> None:
        self._observed += 1
        d, m = self.DECAY, self.model
        n = report.fed
        cycle_s = report.draft_s + report.translate_s + report.verify_s
        m.elapsed += cycle_s
        if report.k and report.source in self._exploring:
            self._exploring.discard(report.source)
            est = self.source(report.source)
            est.explored += 1
            est.explore_ids += report.draft_fed + report.k
            est.explore_cost += max(0.0, cycle_s - (self.verify_cost(1) or 0.0) * (report.accepted + 1))
        m.w = d * m.w + 1
        m.wn = d * m.wn + n
        m.wnn = d * m.wnn + n * n
        m.wt = d * m.wt + report.verify_s
        m.wnt = d * m.wnt + n * report.verify_s
        if report.k == 0:
            return
        est = self.source(report.source)
        per_token = report.draft_s / report.k
        est.draft_per_token = per_token if est.draft_per_token is None else d * est.draft_per_token + (1 - d) * per_token
        est.translate_s = d * est.translate_s + (1 - d) * report.translate_s
        est.ratio = d * est.ratio + (1 - d) * (report.proposed / report.k)
        if report.proposed:
            est.accepted = d * est.accepted + report.accepted
            est.rejected = d * est.rejected + (1 if report.accepted < report.proposed else 0)
            est.observe_positions(report.proposed, report.accepted, d)


@hookimpl
def register_k_policies(register):
    register(FixedK)
    register(AdaptiveK)
