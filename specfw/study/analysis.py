"""The reference paper's tables, computed from evaluation records (no formatting, no output).

Everything here is a pure function of a list of :class:`~specfw.study.records.EvalRecord`.
Acceptance rates and break-even points are fractions (0..1); the report turns
them into percentages. Table numbers follow the paper:

* Tables 2-4: :func:`condition_table` (mean acceptance, TPS, speedup per condition and dataset);
* Table 5: :func:`break_even_table` (OLS break-even α* with a delta-method 95% interval);
* Tables 6, 8-10: :func:`bucket_tables` (mean speedup in 10-point acceptance buckets);
* Table 7: :func:`cost_model_table` (the cost model S(α, k) with its fitted overhead c).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev
from typing import Iterable, Optional, Sequence

import numpy as np
import statsmodels.api as sm
from pydantic import ValidationError
from scipy.optimize import OptimizeWarning, curve_fit

from specfw.errors import SpecfwError
from specfw.study.records import EvalRecord

RECORDS_FILE = "records.jsonl"
# The paper's order of translation conditions; other translators follow in order of appearance.
TRANSLATOR_ORDER = ("none", "naive", "context")
# The paper's tables 4-10 and its cost model use context-aware translation only.
FOCUS_TRANSLATOR = "context"
FORMULA_KS = (1, 2, 3, 4, 6, 8)
BUCKET_COUNT = 10
MIN_OLS_POINTS = 3  # two points fit a line exactly and leave no residual to estimate its covariance
Z95 = 1.959963984540054  # two-sided 95% normal quantile: the delta method is asymptotic


# --------------------------------------------------------------------------- loading


def records_file(path: str | Path) -> Path:
    """``path`` itself, or ``path/records.jsonl`` when ``path`` is an eval output folder."""
    path = Path(path)
    return path / RECORDS_FILE if path.is_dir() else path


def load_records(path: str | Path) -> list[EvalRecord]:
    """Every record in a JSONL file (or an eval folder); blank lines are skipped.

    A line that is not a valid record raises :class:`SpecfwError` naming the
    file and the line, unlike ``specfw eval``'s resume reader, which drops a
    final line cut short by an interruption: a report must not silently skip data.
    """
    file = records_file(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise SpecfwError(f"records file '{file}' does not exist") from None
    except OSError as exc:
        raise SpecfwError(f"cannot read records file '{file}': {exc.strerror}") from None
    records = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(EvalRecord.model_validate_json(line))
        except ValidationError as exc:
            raise SpecfwError(f"{file}: line {number} is not a valid record ({_first_error(exc)})") from None
    return records


def _first_error(exc: ValidationError) -> str:
    """One line describing the first validation problem."""
    errors = exc.errors()
    if not errors:
        return "invalid"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = " ".join(str(first.get("msg", "invalid")).split())
    more = f"; {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


# --------------------------------------------------------------------------- conditions and layout


@dataclass(frozen=True)
class Condition:
    """One speculative configuration: drafter × translator × k × cache-sync."""

    drafter: str
    translator: str
    k: int
    cache_sync: str

    @property
    def name(self) -> str:
        return f"{self.drafter}/{self.translator}/k{self.k}/{self.cache_sync}"


def condition_of(record: EvalRecord) -> Optional[Condition]:
    """The record's condition (None for a baseline run)."""
    if record.is_baseline:
        return None
    if record.drafter is not None and record.translator is not None and record.k is not None:
        return Condition(record.drafter, record.translator, record.k, record.cache_sync or "")
    # Fall back to the name; split from the right because drafter names may contain '/' (HF ids).
    parts = record.condition.rsplit("/", 3)
    if len(parts) == 4 and parts[2].startswith("k") and parts[2][1:].isdigit():
        return Condition(parts[0], parts[1], int(parts[2][1:]), parts[3])
    raise SpecfwError(f"record {record.key()} has no drafter/translator/k and its condition name cannot be parsed")


@dataclass(frozen=True)
class Layout:
    """Which datasets and conditions the records hold, in display order.

    Datasets, drafters and cache-syncs keep their order of first appearance
    (the sweep's order); translators follow the paper (none, naive, context);
    k ascends.
    """

    datasets: list[str]
    drafters: list[str]
    translators: list[str]
    ks: list[int]
    cache_syncs: list[str]
    conditions: list[Condition]

    def sort_key(self, c: Condition) -> tuple[int, int, int, int]:
        return (self.drafters.index(c.drafter), self.translators.index(c.translator), c.k,
                self.cache_syncs.index(c.cache_sync))


def layout(records: Sequence[EvalRecord]) -> Layout:
    datasets: dict[str, None] = {}
    drafters: dict[str, None] = {}
    translators: dict[str, None] = {}
    cache_syncs: dict[str, None] = {}
    conditions: dict[Condition, None] = {}
    for r in records:
        datasets.setdefault(r.dataset)
        c = condition_of(r)
        if c is None:
            continue
        drafters.setdefault(c.drafter)
        translators.setdefault(c.translator)
        cache_syncs.setdefault(c.cache_sync)
        conditions.setdefault(c)
    known = [t for t in TRANSLATOR_ORDER if t in translators]
    ordered_translators = known + [t for t in translators if t not in known]
    base = Layout(list(datasets), list(drafters), ordered_translators, sorted({c.k for c in conditions}),
                  list(cache_syncs), [])
    return Layout(base.datasets, base.drafters, base.translators, base.ks, base.cache_syncs,
                  sorted(conditions, key=base.sort_key))


def focus_translator(records: Sequence[EvalRecord]) -> Optional[str]:
    """``"context"`` when the records have it (the paper's focus), else None (meaning: every translator)."""
    return FOCUS_TRANSLATOR if FOCUS_TRANSLATOR in layout(records).translators else None


def _selected(records: Iterable[EvalRecord], translator: Optional[str] = None, k: Optional[int] = None,
              ) -> list[tuple[EvalRecord, Condition]]:
    """Non-baseline records with their conditions, optionally of one translator and/or one k."""
    out = []
    for r in records:
        c = condition_of(r)
        if c is None or (translator is not None and c.translator != translator) or (k is not None and c.k != k):
            continue
        out.append((r, c))
    return out


# --------------------------------------------------------------------------- Tables 2-4


@dataclass(frozen=True)
class Stat:
    """Means over the prompts of one cell (acceptance as a fraction; per-prompt means, not pooled ratios)."""

    n: int
    acceptance: float
    tps: float
    speedup: float
    acceptance_sd: float  # sample standard deviation over the prompts (0 for one prompt)

    @property
    def acceptance_se(self) -> float:
        """Standard error of the mean acceptance."""
        return self.acceptance_sd / math.sqrt(self.n)


def _stat(records: Sequence[EvalRecord]) -> Stat:
    rates = [r.acceptance_rate for r in records]
    return Stat(n=len(records), acceptance=fmean(rates), tps=fmean(r.tps for r in records),
                speedup=fmean(r.speedup for r in records), acceptance_sd=stdev(rates) if len(rates) > 1 else 0.0)


@dataclass(frozen=True)
class ConditionRow:
    condition: Condition
    cells: dict[str, Stat]  # dataset -> stat; a dataset missing here has no records for this condition


@dataclass(frozen=True)
class ConditionTable:
    """Tables 2 (acceptance), 3 (TPS and speedup, with the baseline row) and 4 (the k effect).

    ``baseline`` holds the target-alone runs per dataset (their speedup is 1 by definition).
    """

    datasets: list[str]
    baseline: dict[str, Stat]
    rows: list[ConditionRow]


def condition_table(records: Sequence[EvalRecord], *, k: Optional[int] = None,
                    translator: Optional[str] = None) -> ConditionTable:
    """Mean acceptance, TPS and speedup per condition × dataset.

    Table 2 is its acceptance column and Table 3 its TPS/speedup columns (one
    table per k); Table 4 is the same with ``translator="context"`` and every k.
    """
    lay = layout(records)
    groups: dict[tuple[Condition, str], list[EvalRecord]] = {}
    for r, c in _selected(records, translator, k):
        groups.setdefault((c, r.dataset), []).append(r)
    baseline_groups: dict[str, list[EvalRecord]] = {}
    for r in records:
        if r.is_baseline:
            baseline_groups.setdefault(r.dataset, []).append(r)
    rows = []
    for c in lay.conditions:
        cells = {d: _stat(groups[(c, d)]) for d in lay.datasets if (c, d) in groups}
        if cells:
            rows.append(ConditionRow(c, cells))
    baseline = {d: _stat(baseline_groups[d]) for d in lay.datasets if d in baseline_groups}
    return ConditionTable(lay.datasets, baseline, rows)


# --------------------------------------------------------------------------- Table 5: OLS break-even


@dataclass(frozen=True)
class LineFit:
    """OLS of y on acceptance, y = β0 + β1·α, and where it reaches ``level`` (α* = (level − β0)/β1).

    ``se`` is α*'s standard error by the delta method from the covariance of
    (β0, β1). ``reason`` says why there is no α* (then ``alpha_star`` is None;
    the coefficients are kept when the regression itself could be fitted).
    """

    n: int
    level: float
    beta0: Optional[float] = None
    beta1: Optional[float] = None
    cov: Optional[tuple[tuple[float, float], tuple[float, float]]] = None
    r2: Optional[float] = None
    alpha_star: Optional[float] = None
    se: Optional[float] = None
    reason: Optional[str] = None

    @property
    def half_width(self) -> Optional[float]:
        """Half the 95% interval."""
        return None if self.se is None else Z95 * self.se

    @property
    def ci(self) -> Optional[tuple[float, float]]:
        if self.alpha_star is None or self.half_width is None:
            return None
        return (self.alpha_star - self.half_width, self.alpha_star + self.half_width)

    @property
    def unreachable(self) -> bool:
        """α* above 100%: no achievable acceptance rate reaches the level."""
        return self.alpha_star is not None and self.alpha_star > 1.0


def delta_method_se(beta0: float, beta1: float, cov: np.ndarray, level: float) -> float:
    """Standard error of α* = (level − β0)/β1, from the gradient (−1/β1, −(level − β0)/β1²)."""
    grad = np.array([-1.0 / beta1, -(level - beta0) / beta1**2])
    return float(math.sqrt(max(float(grad @ cov @ grad), 0.0)))


def ols_break_even(alpha: Sequence[float], y: Sequence[float], level: float) -> LineFit:
    """Fit y = β0 + β1·α by OLS (statsmodels) and solve for y = ``level``; never raises on thin data."""
    a = np.asarray(alpha, dtype=float)
    v = np.asarray(y, dtype=float)
    n = len(a)
    if n < MIN_OLS_POINTS:
        return LineFit(n, level, reason=f"too few points (need ≥ {MIN_OLS_POINTS})")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(v)) and math.isfinite(level)):
        return LineFit(n, level, reason="non-finite values")
    if np.ptp(a) == 0:
        return LineFit(n, level, reason="zero variance in acceptance")
    fit = sm.OLS(v, np.column_stack([np.ones(n), a])).fit()
    b0, b1 = (float(p) for p in fit.params)
    cov = np.asarray(fit.cov_params(), dtype=float)
    cov_t = ((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1])))
    # R² is undefined when y does not vary at all.
    r2 = float(fit.rsquared) if np.ptp(v) > 0 else None
    common = dict(n=n, level=level, beta0=b0, beta1=b1, cov=cov_t, r2=r2)
    if not b1 > 0:
        return LineFit(**common, reason="slope ≤ 0: throughput does not rise with acceptance")
    return LineFit(**common, alpha_star=(level - b0) / b1, se=delta_method_se(b0, b1, cov, level))


@dataclass(frozen=True)
class BreakEven:
    """One Table 5 cell: per-prompt TPS on acceptance for one condition on one dataset."""

    dataset: str
    condition: Condition
    baseline_tps: Optional[float]  # mean baseline TPS on the dataset: the level the line must reach
    fit: LineFit


def break_even_table(records: Sequence[EvalRecord], translator: Optional[str] = None) -> list[BreakEven]:
    """Table 5 for every dataset × condition (optionally one translator), in layout order."""
    lay = layout(records)
    baseline = condition_table(records).baseline
    points: dict[tuple[str, Condition], list[EvalRecord]] = {}
    for r, c in _selected(records, translator):
        points.setdefault((r.dataset, c), []).append(r)
    out = []
    for d in lay.datasets:
        for c in lay.conditions:
            group = points.get((d, c))
            if not group:
                continue
            base = baseline.get(d)
            if base is None:
                fit = LineFit(len(group), math.nan, reason="no baseline records on this dataset")
            else:
                fit = ols_break_even([r.acceptance_rate for r in group], [r.tps for r in group], base.tps)
            out.append(BreakEven(d, c, None if base is None else base.tps, fit))
    return out


def speedup_line(records: Sequence[EvalRecord]) -> LineFit:
    """OLS of per-prompt speedup on acceptance and where it crosses 1 (pools datasets: speedup is relative)."""
    return ols_break_even([r.acceptance_rate for r in records], [r.speedup for r in records], 1.0)


# --------------------------------------------------------------------------- Tables 6, 8-10: buckets


def bucket_index(acceptance: float) -> int:
    """0 for [0, 10%), ..., 9 for [90%, 100%]; a hair of tolerance so 3/10 lands in 30-40%."""
    return min(max(int(math.floor(acceptance * BUCKET_COUNT + 1e-9)), 0), BUCKET_COUNT - 1)


@dataclass(frozen=True)
class BucketCell:
    n: int
    speedup: float  # mean speedup of the prompts in the bucket
    acceptance: float  # their mean acceptance


@dataclass(frozen=True)
class BucketRow:
    low: float  # bucket bounds as fractions: [low, high), the last one closed
    high: float
    cells: list[Optional[BucketCell]]  # one per column; None when no prompt falls here


@dataclass(frozen=True)
class BucketTable:
    dataset: Optional[str]  # None: every dataset pooled
    columns: list[Condition]  # ordered k first, then drafter (the paper's layout)
    rows: list[BucketRow]  # all ten buckets, empty ones included


def bucket_tables(records: Sequence[EvalRecord], translator: Optional[str] = None) -> list[BucketTable]:
    """Mean speedup per 10-point acceptance bucket × condition: one table per dataset, then one pooled
    (the pooled table only when there is more than one dataset, as it would repeat the only one)."""
    lay = layout(records)
    selected = _selected(records, translator)
    scopes: list[Optional[str]] = list(lay.datasets) + ([None] if len(lay.datasets) > 1 else [])
    tables = []
    for scope in scopes:
        in_scope = [(r, c) for r, c in selected if scope is None or r.dataset == scope]
        if not in_scope:
            continue
        present = {c for _, c in in_scope}
        columns = sorted(present, key=lambda c: (c.k, *lay.sort_key(c)))
        groups: dict[tuple[int, Condition], list[EvalRecord]] = {}
        for r, c in in_scope:
            groups.setdefault((bucket_index(r.acceptance_rate), c), []).append(r)
        rows = []
        for b in range(BUCKET_COUNT):
            cells: list[Optional[BucketCell]] = []
            for c in columns:
                group = groups.get((b, c))
                cells.append(None if not group else BucketCell(
                    len(group), fmean(r.speedup for r in group), fmean(r.acceptance_rate for r in group)))
            rows.append(BucketRow(b / BUCKET_COUNT, (b + 1) / BUCKET_COUNT, cells))
        tables.append(BucketTable(scope, columns, rows))
    return tables


# --------------------------------------------------------------------------- Table 7: cost model


def cost_model_speedup(alpha: float | np.ndarray, k: float | np.ndarray, r: float | np.ndarray,
                       c: float) -> float | np.ndarray:
    """S(α, k) = (1 + k·α) / (1 + (k + 1)·r + c·k²): k·α extra tokens per cycle against k draft steps
    plus one resync pass (each r of a target step), one verify, and an overhead growing as k²."""
    return (1 + k * alpha) / (1 + (k + 1) * r + c * k**2)


def break_even_alpha(k: float, r: float, c: float) -> float:
    """α*(k) = ((k + 1)·r + c·k²) / k, where S(α*, k) = 1."""
    return ((k + 1) * r + c * k**2) / k


@dataclass(frozen=True)
class CostFit:
    """c fitted by nonlinear least squares on per-record speedups; r is the mean draft/target byte ratio."""

    drafter: Optional[str]  # None: every drafter pooled (each record keeps its own r in the fit)
    n: int
    r: Optional[float] = None
    c: Optional[float] = None
    c_se: Optional[float] = None
    rmse: Optional[float] = None  # of speedup residuals
    reason: Optional[str] = None

    def alpha_star(self, k: int) -> Optional[float]:
        if self.r is None or self.c is None:
            return None
        return break_even_alpha(k, self.r, self.c)


def fit_cost_model(alpha: Sequence[float], k: Sequence[float], r: Sequence[float], speedup: Sequence[float],
                   drafter: Optional[str] = None) -> CostFit:
    """Fit c in S(α, k) = (1 + k·α) / (1 + (k + 1)·r + c·k²) to observed speedups (scipy curve_fit)."""
    a, kk, rr, s = (np.asarray(x, dtype=float) for x in (alpha, k, r, speedup))
    n = len(a)
    if n == 0:
        return CostFit(drafter, 0, reason="no records with draft and target byte counts")
    r_mean = float(np.mean(rr))
    if not np.all(np.isfinite(np.vstack([a, kk, rr, s]))):
        return CostFit(drafter, n, r=r_mean, reason="non-finite values")

    def model(x: np.ndarray, c: float) -> np.ndarray:
        return cost_model_speedup(x[0], x[1], x[2], c)

    # Keep every denominator positive: c must exceed −(1 + (k + 1)·r)/k² at every observed k.
    lower = float(np.max(-(1 + (kk + 1) * rr) / kk**2)) * (1 - 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # n = 1: no covariance, reported as c_se = None
        try:
            popt, pcov = curve_fit(model, np.vstack([a, kk, rr]), s, p0=[max(0.1, lower + 1.0)],
                                   bounds=([lower], [np.inf]))
        except (RuntimeError, ValueError) as exc:
            return CostFit(drafter, n, r=r_mean, reason=f"the fit did not converge ({exc})")
    c = float(popt[0])
    var = float(pcov[0, 0])
    residuals = s - model(np.vstack([a, kk, rr]), c)
    return CostFit(drafter, n, r=r_mean, c=c, c_se=math.sqrt(var) if math.isfinite(var) and n > 1 else None,
                   rmse=float(np.sqrt(np.mean(residuals**2))))


@dataclass(frozen=True)
class CostModelRow:
    """One drafter (or the pool): the fit, its α*(k), and Table 5's OLS α* values at the same k."""

    fit: CostFit
    formula: dict[int, Optional[float]]  # k -> α*(k) from the fitted formula
    empirical: dict[int, list[float]] = field(default_factory=dict)  # k -> OLS α* over datasets (Table 5)


def cost_model_table(records: Sequence[EvalRecord], translator: Optional[str] = None,
                     ks: Sequence[int] = FORMULA_KS) -> list[CostModelRow]:
    """Table 7: the cost model per drafter, then pooled over drafters (when more than one).

    α*(k) is given at ``ks`` plus every k the records hold; ``empirical`` lists
    the Table 5 α* (same translator selection) of each dataset and cache-sync.
    """
    lay = layout(records)
    selected = [(r, c) for r, c in _selected(records, translator)
                if r.draft_bytes is not None and r.target_bytes > 0]
    all_ks = sorted(set(ks) | set(lay.ks))
    estimates = [b for b in break_even_table(records, translator) if b.fit.alpha_star is not None]
    scopes: list[Optional[str]] = list(lay.drafters) + ([None] if len(lay.drafters) > 1 else [])
    rows = []
    for drafter in scopes:
        group = [(r, c) for r, c in selected if drafter is None or c.drafter == drafter]
        fit = fit_cost_model([r.acceptance_rate for r, _ in group], [c.k for _, c in group],
                             [(r.draft_bytes or 0) / r.target_bytes for r, _ in group],
                             [r.speedup for r, _ in group], drafter)
        empirical: dict[int, list[float]] = {}
        for b in estimates:
            if drafter is None or b.condition.drafter == drafter:
                empirical.setdefault(b.condition.k, []).append(b.fit.alpha_star)  # type: ignore[arg-type]
        rows.append(CostModelRow(fit, {k: fit.alpha_star(k) for k in all_ks}, empirical))
    return rows
