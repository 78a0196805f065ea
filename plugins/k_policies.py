"""Built-in k policies: ``fixed`` (always ``--k``) and ``adaptive`` (the paper's cost model, measured online).

A k policy is asked, before every cycle, how many draft tokens to propose
(0: no drafting this cycle, the target steps alone), and is told afterwards
what the cycle cost and yielded (:class:`specfw.protocols.CycleReport`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from specfw.hookspecs import hookimpl
from specfw.protocols import CycleReport, KPolicySetup


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

    def explore_forecast(self, catch_up: int | None) -> float:
        """Seconds the next exploration is expected to cost beyond a plain step (0 before the first)."""
        if not self.explored:
            return 0.0
        if catch_up is None or not self.explore_ids:
            return self.explore_cost / self.explored
        # the drafter's catch-up dominates an exploration's cost: scale by the ids it would forward
        return self.explore_cost / self.explore_ids * (catch_up + 1)

    def alpha(self) -> float:
        return self.accepted / (self.accepted + self.rejected)


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


class AdaptiveK:
    """Chooses k in 0..``--k-max`` each cycle, per proposal source, to maximise expected tokens per second.

    For each source (``draft``: the drafter's model, translated; ``target``: a
    combined drafter's target-vocabulary part such as ``lookup``) it keeps
    running estimates (exponentially weighted, so they follow the text) of:

    * the cost per proposed draft token ``t_d`` (propose time / k, the
      drafter's catch-up included) and the translation cost ``t_x``;
    * the per-token acceptance probability ``α`` (accepted / (accepted +
      rejections)), and ``ρ``, target ids proposed per draft token (translation
      changes the count);

    and, shared by all sources, the target pass cost as a line in the number of
    fed ids, ``t_v(n) = a + b n``, fitted by weighted least squares on every
    cycle (plain steps included).

    With these, a cycle proposing k draft tokens verifies ``m = ρk`` target ids
    and yields ``E(k) = (1 − α^(m+1)) / (1 − α)`` tokens on average (the
    paper's i.i.d. model) at cost ``k t_d + t_x + t_v(m + 1)``; k = 0 yields
    one token at cost ``t_v(1)``. It picks the k with the most tokens per
    second. It starts at ``--k`` for each source. While k = 0 wins, it still
    explores with k = 1 now and then, so that a text that became easy to draft
    is noticed; what explorations cost beyond the plain steps they replace is
    bounded: after at least ``explore_every`` (8) idle cycles, a source is
    explored only while its explorations, this one included, cost at most
    ``explore_budget`` (0.5%) of the time spent so far. This one is forecast
    from the ids the drafter would forward first (its catch-up: the text it
    has not seen, told by the scheduler as ``catch_up``) at the cost per
    forwarded id that earlier explorations showed (the first is always
    allowed), so a cheap exploration is taken and a long catch-up waits.

    What it learns is kept for the rest of the process per ``KPolicySetup.pair``
    (the models and plugins of the run), so later generations on the same pair
    (an eval sweep, a server) start from the estimates, not from ``--k``.
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
        if setup.pair:
            self.model = self._learnt.setdefault(setup.pair, _CostModel())
        else:
            self.model = _CostModel()
        self._exploring: set[str] = set()
        self._idle: dict[str, int] = {}

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
            slope = max(slope, 0.0) if var > 1e-9 else mean_t / max(mean_n, 1.0) * 0.5
        return max(mean_t + slope * (n - mean_n), 1e-9)

    def expected_rate(self, k: int, source: str = "draft") -> float | None:
        """Expected generated tokens per second when ``source`` proposes ``k`` draft tokens."""
        base = self.verify_cost(1)
        if base is None:
            return None
        if k == 0:
            return 1.0 / base
        est = self.source(source)
        if est.draft_per_token is None:
            return None
        alpha = min(est.alpha(), 0.999)
        m = est.ratio * k
        tokens = (1 - alpha ** (m + 1)) / (1 - alpha)
        cost = k * est.draft_per_token + est.translate_s + self.verify_cost(m + 1)
        return tokens / cost

    # -- protocol ----------------------------------------------------------

    def choose(self, source: str = "draft", catch_up: int | None = None) -> int:
        est = self.source(source)
        rates = {k: self.expected_rate(k, source) for k in range(0, self.k_max + 1)}
        if any(r is None for r in rates.values()):
            return self.k  # not enough measured yet: keep the starting k
        best = max(rates, key=lambda k: (rates[k], -k))
        if best:
            self._idle[source] = 0
            return best
        self._idle[source] = self._idle.get(source, 0) + 1
        forecast = est.explore_forecast(catch_up)
        within_budget = est.explore_cost + forecast <= self.explore_budget * self.model.elapsed
        if self._idle[source] >= self.explore_every and within_budget:
            self._idle[source] = 0
            self._exploring.add(source)
            return 1
        return 0

    def observe(self, report: CycleReport) -> None:
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


@hookimpl
def register_k_policies(register):
    register(FixedK)
    register(AdaptiveK)
