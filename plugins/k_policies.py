"""Built-in k policies: ``fixed`` (always ``--k``) and ``adaptive`` (the paper's cost model, measured online).

A k policy is asked, before every cycle, how many draft tokens to propose
(0: no drafting this cycle, the target steps alone), and is told afterwards
what the cycle cost and yielded (:class:`specfw.protocols.CycleReport`).
"""

from __future__ import annotations

from specfw.hookspecs import hookimpl
from specfw.protocols import CycleReport, KPolicySetup


class FixedK:
    """Always proposes ``--k`` tokens: the paper's setting."""

    name = "fixed"

    def __init__(self, setup: KPolicySetup) -> None:
        self.k = setup.config.k

    def choose(self) -> int:
        return self.k

    def observe(self, report: CycleReport) -> None:
        pass


class AdaptiveK:
    """Chooses k in 0..``--k-max`` each cycle to maximise expected tokens per second.

    It keeps running estimates (exponentially weighted, so they follow the
    text) of:

    * the drafter's cost per proposed token ``t_d`` (propose time / k,
      back-translation resync included) and the translation cost ``t_x``;
    * the target pass cost as a line in the number of fed ids,
      ``t_v(n) = a + b n``, fitted by weighted least squares on the cycles seen;
    * the per-token acceptance probability ``α`` (accepted / (accepted +
      rejections)), and ``ρ``, target ids proposed per draft token (translation
      changes the count).

    With these, a cycle proposing k draft tokens verifies ``m = ρk`` target ids
    and yields ``E(k) = (1 − α^(m+1)) / (1 − α)`` tokens on average (the
    paper's i.i.d. model) at cost ``k t_d + t_x + t_v(m + 1)``; k = 0 yields
    one token at cost ``t_v(1)``. It picks the k with the most tokens per
    second. To keep learning, it starts at ``--k``, and after ``explore_every``
    (8) cycles without drafting it drafts one cycle with k = 1; while drafting
    keeps not paying, the wait doubles after each such cycle, up to
    ``explore_max`` (128), and it drops back to 8 once drafting is chosen.
    """

    name = "adaptive"
    DECAY = 0.95
    explore_every = 8
    explore_max = 128

    def __init__(self, setup: KPolicySetup) -> None:
        config = setup.config
        self.k_max = max(config.k_max, 1)
        self.k = min(config.k, self.k_max)
        self.draft_per_token = None  # seconds
        self.translate_s = 0.0
        self.accepted = 1.0  # pseudo-counts: start from α = 0.5
        self.rejected = 1.0
        self.ratio = 1.0
        # weighted sums for the least-squares line t_v(n) = a + b n
        self._w = self._wn = self._wnn = self._wt = self._wnt = 0.0
        self.idle = 0
        self.explore_interval = self.explore_every

    # -- estimates ---------------------------------------------------------

    def alpha(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def verify_cost(self, n: float) -> float | None:
        """Estimated seconds of a target pass over ``n`` ids, or None before any observation."""
        if self._w == 0:
            return None
        mean_n, mean_t = self._wn / self._w, self._wt / self._w
        var = self._wnn / self._w - mean_n**2
        slope = (self._wnt / self._w - mean_n * mean_t) / var if var > 1e-9 else 0.0
        if slope < 0 or var <= 1e-9:
            # one width seen so far (or noise): assume the cost per id it implies, the safe guess on any device
            slope = max(slope, 0.0) if var > 1e-9 else mean_t / max(mean_n, 1.0) * 0.5
        return max(mean_t + slope * (n - mean_n), 1e-9)

    def expected_rate(self, k: int) -> float | None:
        """Expected generated tokens per second when proposing ``k`` draft tokens."""
        base = self.verify_cost(1)
        if base is None:
            return None
        if k == 0:
            return 1.0 / base
        if self.draft_per_token is None:
            return None
        alpha = min(self.alpha(), 0.999)
        m = self.ratio * k
        tokens = (1 - alpha ** (m + 1)) / (1 - alpha)
        cost = k * self.draft_per_token + self.translate_s + self.verify_cost(m + 1)
        return tokens / cost

    # -- protocol ----------------------------------------------------------

    def choose(self) -> int:
        rates = {k: self.expected_rate(k) for k in range(0, self.k_max + 1)}
        if any(r is None for r in rates.values()):
            return self.k  # not enough measured yet: keep the starting k
        best = max(rates, key=lambda k: (rates[k], -k))
        if best == 0:
            self.idle += 1
            if self.idle >= self.explore_interval:
                # each exploration that still finds drafting unprofitable makes the next one twice as rare
                self.idle = 0
                self.explore_interval = min(2 * self.explore_interval, self.explore_max)
                return 1
        else:
            self.idle = 0
            self.explore_interval = self.explore_every
        return best

    def observe(self, report: CycleReport) -> None:
        d = self.DECAY
        n = report.fed
        self._w = d * self._w + 1
        self._wn = d * self._wn + n
        self._wnn = d * self._wnn + n * n
        self._wt = d * self._wt + report.verify_s
        self._wnt = d * self._wnt + n * report.verify_s
        if report.k == 0:
            return
        per_token = report.draft_s / report.k
        self.draft_per_token = per_token if self.draft_per_token is None else d * self.draft_per_token + (1 - d) * per_token
        self.translate_s = d * self.translate_s + (1 - d) * report.translate_s
        self.ratio = d * self.ratio + (1 - d) * (report.proposed / report.k)
        if report.proposed:
            self.accepted = d * self.accepted + report.accepted
            self.rejected = d * self.rejected + (1 if report.accepted < report.proposed else 0)


@hookimpl
def register_k_policies(register):
    register(FixedK)
    register(AdaptiveK)
