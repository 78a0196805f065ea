"""``report.md`` and plots from evaluation records, laid out like the reference paper's tables.

Every number comes from the records (through :mod:`specfw.study.analysis`); the
report holds no timestamps, so rebuilding it from the same records gives the
same file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from specfw.study.analysis import (
    BreakEven,
    BucketTable,
    Condition,
    ConditionTable,
    CostModelRow,
    LineFit,
    break_even_table,
    bucket_tables,
    condition_of,
    condition_table,
    cost_model_table,
    focus_translator,
    layout,
    load_records,
    records_file,
    speedup_line,
)
from specfw.models.emulation import emulated_shape
from specfw.study.records import EvalRecord

REPORT = "report.md"
SPEEDUP_PLOT = "speedup_vs_acceptance.png"
ACCEPTANCE_PLOT = "acceptance_by_condition.png"
NA = "—"
MARKERS = ("o", "s", "^", "D", "v", "P")
COLUMN_NAMES = {"drafter": "Drafter", "translator": "Translator", "k": "k", "cache_sync": "Cache sync"}
# Headings the tests (and readers) look for.
HEADINGS = {
    2: "Table 2. Token acceptance rate",
    3: "Table 3. Throughput and speedup",
    4: "Table 4. Effect of draft length k",
    5: "Table 5. Break-even acceptance rate",
    6: "Tables 6, 8–10. Speedup by acceptance bucket",
    7: "Table 7. Cost model",
}


def write_report(records_path_or_dir: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` and its two PNG plots from a records file (or an eval folder)."""
    source = records_file(records_path_or_dir)
    records = load_records(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    focus = focus_translator(records)
    plot_speedup_vs_acceptance(records, out / SPEEDUP_PLOT, translator=focus)
    plot_acceptance_by_condition(records, out / ACCEPTANCE_PLOT)
    # Name the source relative to the report when it sits beside it, so the text does not depend on cwd.
    shown = source.name if source.parent.resolve() == out.resolve() else str(source)
    path = out / REPORT
    path.write_text(render_report(records, shown), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- formatting helpers


def _pct(x: Optional[float], digits: int = 1) -> str:
    return NA if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def _num(x: Optional[float], digits: int = 2) -> str:
    return NA if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)])


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _short(name: str) -> str:
    """A drafter's label for plots: the last part of an HF id or a path."""
    return name.rstrip("/").rsplit("/", 1)[-1]


def _shorts_unique(conditions: Sequence[Condition]) -> bool:
    """Whether short drafter names still tell the drafters apart (then column headers may use them)."""
    drafters = {c.drafter for c in conditions}
    return len({_short(d) for d in drafters}) == len(drafters)


def _varying(conditions: Sequence[Condition]) -> list[str]:
    """Condition fields that differ between ``conditions`` (the only ones worth a label or a column)."""
    return [f for f in ("drafter", "translator", "k", "cache_sync") if len({getattr(c, f) for c in conditions}) > 1]


def _label(c: Condition, fields: Sequence[str], short: bool = False) -> str:
    parts = []
    for f in fields:
        value = getattr(c, f)
        if f == "k":
            parts.append(f"k={value}")
        elif f == "drafter":
            parts.append(_short(value) if short else value)
        else:
            parts.append(str(value))
    return " ".join(parts) if parts else (_short(c.drafter) if short else c.drafter)


def _first_of_group(rows: Sequence[Sequence[str]], width: int) -> list[list[str]]:
    """Blank repeated leading key cells, as the paper prints its row groups."""
    out: list[list[str]] = []
    previous: Sequence[str] = ()
    for row in rows:
        shown = list(row)
        for i in range(width):
            if len(previous) > i and previous[i] == row[i] and all(previous[j] == row[j] for j in range(i)):
                shown[i] = ""
        out.append(shown)
        previous = row
    return out


def _counts(cells: dict, datasets: Sequence[str]) -> str:
    """Prompts per cell: one number when every dataset with runs has the same count."""
    ns = [str(cells[d].n) for d in datasets if d in cells]
    return ns[0] if len(set(ns)) == 1 else "/".join(ns)


# --------------------------------------------------------------------------- report text


def render_report(records: Sequence[EvalRecord], source: str = "records.jsonl") -> str:
    """The report's markdown (tables only reference the plot files by name)."""
    parts = [_header(records, source)]
    if not any(condition_of(r) is not None for r in records):
        parts.append("No speculative runs in the records: nothing to tabulate beyond the baseline.\n")
        parts.append(_baseline_only(records))
        return "\n".join(parts)
    focus = focus_translator(records)
    parts += [_table2(records), _table3(records), _table4(records, focus), _table5(records),
              _buckets(records, focus), _table7(records, focus), _plots(focus)]
    return "\n".join(parts)


def _header(records: Sequence[EvalRecord], source: str) -> str:
    lay = layout(records)
    baselines = [r for r in records if r.is_baseline]
    runs = [r for r in records if not r.is_baseline]
    lines = ["# specfw evaluation report", "",
             f"Built from `{source}`: {len(records)} records ({len(baselines)} baseline runs, "
             f"{len(runs)} speculative runs).", ""]
    targets = sorted({r.target for r in records})
    target_bytes = sorted({r.target_bytes for r in records})
    prompts = {d: len({r.prompt_id for r in records if r.dataset == d}) for d in lay.datasets}
    drafter_bytes = {d: sorted({r.draft_bytes for r in runs if r.drafter == d and r.draft_bytes is not None})
                     for d in lay.drafters}
    drafters = []
    for d in lay.drafters:
        sizes = drafter_bytes[d]
        if sizes and len(target_bytes) == 1:
            drafters.append(f"{d} ({_mb(sizes[0])}, r = {sizes[0] / target_bytes[0]:.3f})")
        else:
            drafters.append(d)
    max_tokens = sorted({r.max_tokens for r in records})
    summary = [
        ("Target", ", ".join(targets) + (f" ({_mb(target_bytes[0])})" if len(target_bytes) == 1 else "")),
        ("Datasets", ", ".join(f"{d} ({n} prompts)" for d, n in prompts.items())),
        ("Drafters", ", ".join(drafters) or NA),
        ("Conditions", f"{len(lay.conditions)}: translators {', '.join(lay.translators) or NA}; "
                       f"k {', '.join(map(str, lay.ks)) or NA}; cache-sync {', '.join(lay.cache_syncs) or NA}"),
        ("Max tokens", ", ".join(map(str, max_tokens))),
    ]
    bad = [r for r in records if not r.lossless]
    lossless = (f"**NO: {len(bad)} record(s) differ from the baseline** (of {len(runs)} speculative runs)" if bad
                else f"yes: every one of the {len(runs)} speculative runs produced the baseline's tokens")
    summary.append(("Lossless", lossless))
    lines.append(_md_table(["", ""], summary))
    shadows = sorted({emulated_shape(t) for t in targets} - {None})
    if shadows:
        lines += ["", f"**Emulated target** (`--emulate-target {', '.join(shadows)}`, a study tool): the text, the "
                  "acceptance and the drafter are real; every target pass also forwarded a random-weight model of "
                  "that shape on the same ids, so speeds are those of a target as large as both together, not of a "
                  "real model."]
    warnings = _warnings(records, targets)
    if warnings:
        lines += ["", *(f"- **Warning:** {w}" for w in warnings)]
    if bad:
        lines += ["", "## ⚠ NOT LOSSLESS", "",
                  f"**{len(bad)} record(s) generated tokens that differ from the target-alone baseline on the same "
                  "prompt.** Speculative decoding must not change the output; their speedups compare different "
                  "texts. They are still included in every table below.", "",
                  _md_table(["Dataset", "Prompt", "Condition", "Generated", "Acceptance (%)", "Speedup"],
                            [[r.dataset, r.prompt_id, r.condition, str(r.generated), _pct(r.acceptance_rate),
                              _num(r.speedup)] for r in bad])]
    return "\n".join(lines) + "\n"


def _warnings(records: Sequence[EvalRecord], targets: Sequence[str]) -> list[str]:
    out = []
    if len(targets) > 1:
        out.append(f"the records mix {len(targets)} targets ({', '.join(targets)}); tables pool them.")
    with_base = {(r.dataset, r.prompt_id) for r in records if r.is_baseline}
    orphans = {(r.dataset, r.prompt_id) for r in records if not r.is_baseline} - with_base
    if orphans:
        out.append(f"{len(orphans)} prompt(s) have speculative runs but no baseline record.")
    idle = sum(1 for r in records if not r.is_baseline and r.proposed == 0)
    if idle:
        out.append(f"{idle} speculative run(s) proposed no draft tokens; their acceptance counts as 0%.")
    return out


def _baseline_only(records: Sequence[EvalRecord]) -> str:
    table = condition_table(records)
    return _md_table(["Dataset", "Baseline TPS", "n"],
                     [[d, _num(table.baseline[d].tps), str(table.baseline[d].n)] for d in table.datasets
                      if d in table.baseline]) + "\n"


def _row_keys(table: ConditionTable) -> tuple[list[str], list[str]]:
    """The key columns of a one-k condition table: drafter, translator, and cache-sync when it varies."""
    conditions = [row.condition for row in table.rows]
    keys = ["drafter", "translator"]
    if "cache_sync" in _varying(conditions):
        keys.append("cache_sync")
    return keys, [COLUMN_NAMES[k] for k in keys]


def _table2(records: Sequence[EvalRecord]) -> str:
    out = []
    for k in layout(records).ks:
        table = condition_table(records, k=k)
        keys, key_names = _row_keys(table)
        # Bold the best translator per drafter (and cache-sync) and dataset, as the paper does.
        best: dict[tuple[str, str, str], float] = {}
        for row in table.rows:
            for d, cell in row.cells.items():
                group = (row.condition.drafter, row.condition.cache_sync, d)
                best[group] = max(best.get(group, -1.0), cell.acceptance)
        several = len({row.condition.translator for row in table.rows}) > 1
        rows = []
        for row in table.rows:
            c = row.condition
            cells = []
            for d in table.datasets:
                cell = row.cells.get(d)
                cells.append(NA if cell is None else _bold(
                    _pct(cell.acceptance), several and cell.acceptance == best[(c.drafter, c.cache_sync, d)]))
            rows.append([str(getattr(c, key)) for key in keys] + cells + [_counts(row.cells, table.datasets)])
        out += [f"## {HEADINGS[2]} (%), k = {k}", "",
                f"Mean over prompts of each run's acceptance rate α = accepted / proposed draft tokens "
                f"(counted in target tokens after translation), k = {k}; bold: the best translator per drafter "
                "and dataset; n: prompts per cell.", "",
                _md_table(key_names + table.datasets + ["n"], _first_of_group(rows, len(keys))), ""]
    return "\n".join(out)


def _mean_repetition(records: Iterable[EvalRecord]) -> Optional[float]:
    """Mean ``repetition`` of the records that have one (None when none has: records older than the field)."""
    values = [r.repetition for r in records if r.repetition is not None]
    return sum(values) / len(values) if values else None


def _table3(records: Sequence[EvalRecord]) -> str:
    out = []
    with_repetition = any(r.repetition is not None for r in records)
    whats = ("TPS", "speedup", "rep. (%)") if with_repetition else ("TPS", "speedup")
    for k in layout(records).ks:
        table = condition_table(records, k=k)
        keys, key_names = _row_keys(table)
        repetition: dict[tuple[Optional[Condition], str], list[EvalRecord]] = {}
        for r in records:
            c = condition_of(r)
            if c is None or c.k == k:
                repetition.setdefault((c, r.dataset), []).append(r)

        def rep(c: Optional[Condition], d: str) -> list[str]:
            return [_pct(_mean_repetition(repetition.get((c, d), [])))] if with_repetition else []

        header = key_names + [f"{d} {what}" for d in table.datasets for what in whats]
        base = [NA, "Baseline"] + [""] * (len(keys) - 2)
        for d in table.datasets:
            cell = table.baseline.get(d)
            base += [NA] * len(whats) if cell is None else [_num(cell.tps), "1.00"] + rep(None, d)
        rows = []
        for row in table.rows:
            c = row.condition
            cells = []
            for d in table.datasets:
                cell = row.cells.get(d)
                cells += [NA] * len(whats) if cell is None else [
                    _num(cell.tps), _bold(_num(cell.speedup), cell.speedup >= 1.0)] + rep(c, d)
            rows.append([str(getattr(c, key)) for key in keys] + cells)
        baseline_note = ", ".join(f"{d} {_num(table.baseline[d].tps)} (n = {table.baseline[d].n})"
                                  for d in table.datasets if d in table.baseline) or "none"
        repetition_note = (" rep.: mean over the cell's prompts of the share of the target alone's generated ids "
                           "that continue a 4-gram already in the prompt or the earlier output (the text a copying "
                           "drafter can reuse; specfw.study.repetition).") if with_repetition else ""
        out += [f"## {HEADINGS[3]}, k = {k}", "",
                "Mean tokens per second (generated tokens from the first to the last, prompt excluded) and mean "
                "per-prompt speedup (a run's TPS / the baseline's TPS on the same prompt), k = "
                f"{k}; bold: speedup ≥ 1.00. Baseline TPS (target alone): {baseline_note}.{repetition_note}", "",
                _md_table(header, [base] + _first_of_group(rows, len(keys))), ""]
    return "\n".join(out)


def _table4(records: Sequence[EvalRecord], focus: Optional[str]) -> str:
    table = condition_table(records, translator=focus)
    conditions = [row.condition for row in table.rows]
    varying = _varying(conditions)
    keys = ["drafter"] + (["translator"] if focus is None and "translator" in varying else []) + ["k"]
    keys += ["cache_sync"] if "cache_sync" in varying else []
    rows = []
    for row in table.rows:  # layout order: drafter, translator, k, cache-sync
        cells = []
        for d in table.datasets:
            cell = row.cells.get(d)
            cells += [NA, NA] if cell is None else [_pct(cell.acceptance),
                                                    _bold(_num(cell.speedup), cell.speedup >= 1.0)]
        rows.append([str(getattr(row.condition, key)) for key in keys] + cells)
    which = f"translator {focus}" if focus else "every translator"
    header = [COLUMN_NAMES[key] for key in keys] + [f"{d} {w}" for d in table.datasets for w in ("α (%)", "speedup")]
    return "\n".join([
        f"## {HEADINGS[4]} ({which})", "",
        f"Mean acceptance α (%) and mean speedup per drafter and draft length k ({which}), per dataset; "
        "bold: speedup ≥ 1.00.", "",
        _md_table(header, _first_of_group(rows, len(keys) - 1)), ""])


def _alpha_cell(fit: LineFit, detail: bool = True) -> str:
    if fit.alpha_star is None:
        return f"n/a (n = {fit.n}): {fit.reason}"
    text = f"{_pct(fit.alpha_star)} ± {_pct(fit.half_width)}%"
    if fit.unreachable:
        text += "†"
    elif fit.alpha_star < 0:
        text += "‡"
    if detail:
        text += f" (R² {_num(fit.r2)}, n = {fit.n})"
    return text


def _table5(records: Sequence[EvalRecord]) -> str:
    estimates = break_even_table(records)
    ks = sorted({b.condition.k for b in estimates})
    conditions = [b.condition for b in estimates]
    varying = _varying(conditions)
    extra = [f for f in ("translator", "cache_sync") if f in varying]
    by_key: dict[tuple, dict[int, BreakEven]] = {}
    for b in estimates:
        key = (b.dataset, b.condition.drafter, *(getattr(b.condition, f) for f in extra))
        by_key.setdefault(key, {})[b.condition.k] = b
    rows = []
    for key, per_k in by_key.items():
        rows.append([str(x) for x in key] + [_alpha_cell(per_k[k].fit) if k in per_k else NA for k in ks])
    pivot = _md_table(["Dataset", "Drafter", *(COLUMN_NAMES[f] for f in extra), *(f"α* at k = {k}" for k in ks)],
                      _first_of_group(rows, 2 + len(extra)))
    detail_rows = []
    for b in estimates:
        f = b.fit
        ci = f.ci
        detail_rows.append([b.dataset, _label(b.condition, ["drafter", "translator", "k", "cache_sync"]),
                            str(f.n), _num(b.baseline_tps), _num(f.beta0), _num(f.beta1), _num(f.r2, 3),
                            _alpha_cell(f, detail=False),
                            NA if ci is None else f"{_pct(ci[0])}–{_pct(ci[1])}%"])
    detail = _md_table(["Dataset", "Condition", "n", "Baseline TPS", "β0 (TPS)", "β1 (TPS per unit α)", "R²",
                        "α* ± 95%", "95% interval"], _first_of_group(detail_rows, 1))
    return "\n".join([
        f"## {HEADINGS[5]} α* (OLS)", "",
        "Per condition and dataset, OLS of per-prompt TPS on per-prompt acceptance, TPS = β0 + β1·α; "
        "α* = (TPS_baseline − β0) / β1 with TPS_baseline the dataset's mean baseline TPS; ± is the 95% "
        "interval by the delta method from the OLS covariance of (β0, β1). † α* > 100%: break-even is "
        "unreachable; ‡ α* < 0: the line is above the baseline even at zero acceptance; n/a says why no "
        "estimate exists.", "", pivot, "", "Details (every translator):", "", detail, ""])


def _bucket_label(low: float, high: float) -> str:
    return f"{round(low * 100)}–{round(high * 100)}%"


def _buckets(records: Sequence[EvalRecord], focus: Optional[str]) -> str:
    which = f"translator {focus}" if focus else "every translator"
    out = [f"## {HEADINGS[6]} ({which})", "",
           "Prompts binned by their acceptance rate in 10-point buckets ([0, 10%), …, [90, 100%]); each cell is "
           f"the bucket's mean speedup (number of prompts), {which}; buckets with no prompt in any column are "
           "left out, empty cells show —; bold: mean speedup ≥ 1.00.", ""]
    for table in bucket_tables(records, translator=focus):
        out += [f"### {'All datasets pooled' if table.dataset is None else 'Dataset: ' + table.dataset}", "",
                _bucket_table(table), ""]
    return "\n".join(out)


def _bucket_table(table: BucketTable) -> str:
    fields = _varying(table.columns) or ["drafter"]
    # k leads the label: the columns are grouped by k as in the paper's Tables 8-10.
    fields = (["k"] if "k" in fields else []) + [f for f in fields if f != "k"]
    rows = []
    for row in table.rows:
        if all(cell is None for cell in row.cells):
            continue
        rows.append([_bucket_label(row.low, row.high)] + [
            NA if cell is None else _bold(f"{cell.speedup:.2f}", cell.speedup >= 1.0) + f" ({cell.n})"
            for cell in row.cells])
    return _md_table(["α bucket"] + [_label(c, fields, short=_shorts_unique(table.columns)) for c in table.columns],
                     rows)


def _formula_alpha(x: Optional[float]) -> str:
    if x is None:
        return NA
    return "> 100%" if x >= 1.0 else f"{_pct(x)}%"


def _empirical_alpha(values: Sequence[float]) -> str:
    if not values:
        return NA
    low, high = min(values), max(values)
    mark = "†" if high > 1.0 else ""
    if len(values) == 1:
        return f"{_pct(low)}%{mark}"
    return f"{_pct(low)}–{_pct(high)}%{mark} ({len(values)})"


def _table7(records: Sequence[EvalRecord], focus: Optional[str]) -> str:
    rows_in: list[CostModelRow] = cost_model_table(records, translator=focus)
    ks = sorted({k for row in rows_in for k in row.formula})
    rows = []
    for row in rows_in:
        fit = row.fit
        name = fit.drafter if fit.drafter is not None else "all drafters"
        if fit.c is None:
            formula = [name, "formula", _num(fit.r, 3), f"n/a: {fit.reason}", str(fit.n), NA] + [NA] * len(ks)
        else:
            c_text = f"{fit.c:.3f}" + (f" ± {fit.c_se:.2g}" if fit.c_se is not None else " (SE n/a)")
            formula = [name, "formula", _num(fit.r, 3), c_text, str(fit.n), _num(fit.rmse, 3)] + [
                _formula_alpha(row.formula[k]) for k in ks]
        rows.append(formula)
        rows.append([name, "OLS (Table 5)", "", "", "", ""] + [_empirical_alpha(row.empirical.get(k, []))
                                                               for k in ks])
    which = f"translator {focus}" if focus else "every translator"
    return "\n".join([
        f"## {HEADINGS[7]} S(α, k) = (1 + k·α) / (1 + (k + 1)·r + c·k²) and break-even α*(k)", "",
        "r = draft bytes / target bytes (mean over the drafter's records); c fitted by nonlinear least squares "
        f"(scipy curve_fit) of S(α, k) to every speculative run's speedup ({which}), with its standard error; "
        "RMSE of the speedup residuals; α*(k) = ((k + 1)·r + c·k²) / k, \"> 100%\" where unreachable. "
        "OLS rows: Table 5's α* at that k (one value, or min–max over datasets/cache-syncs with their count; "
        "† above 100%).", "",
        _md_table(["Drafter", "α* from", "r", "c ± SE", "n", "RMSE"] + [f"k = {k}" for k in ks],
                  _first_of_group(rows, 1)), ""])


def _plots(focus: Optional[str]) -> str:
    which = f"translator {focus}" if focus else "every translator"
    return "\n".join([
        "## Plots", "",
        f"Per-prompt speedup against acceptance, one panel per k ({which}), with the OLS line of speedup on "
        "acceptance and its break-even (speedup = 1):", "",
        f"![speedup vs acceptance]({SPEEDUP_PLOT})", "",
        "Mean acceptance per condition, one panel per dataset (error bars: ±1 standard error over prompts):", "",
        f"![acceptance by condition]({ACCEPTANCE_PLOT})", ""])


# --------------------------------------------------------------------------- plots


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)  # the Agg canvas, without pyplot's global state
    fig.savefig(path, dpi=120)


def _empty_plot(path: Path, title: str, message: str) -> None:
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    _save(fig, path)


def plot_speedup_vs_acceptance(records: Sequence[EvalRecord], path: str | Path,
                               translator: Optional[str] = None) -> Path:
    """Scatter of per-prompt speedup vs acceptance, one panel per k, OLS line and break-even per panel."""
    path = Path(path)
    lay = layout(records)
    runs = [(r, c) for r in records if (c := condition_of(r)) is not None
            and (translator is None or c.translator == translator)]
    which = f"translator: {translator}" if translator else "every translator"
    title = f"Per-prompt speedup vs acceptance ({which})"
    if not runs:
        _empty_plot(path, title, "no speculative runs in the records")
        return path
    ks = sorted({c.k for _, c in runs})
    ncols = min(len(ks), 3)
    nrows = math.ceil(len(ks) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.3 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    colours = {d: f"C{i % 10}" for i, d in enumerate(lay.drafters)}
    short = _shorts_unique([c for _, c in runs])
    names = {d: _short(d) if short else d for d in lay.drafters}
    translators = [t for t in lay.translators if any(c.translator == t for _, c in runs)]
    top = max(1.2, max(r.speedup for r, _ in runs) * 1.08)
    for ax, k in zip(axes.flat, ks):
        panel = [(r, c) for r, c in runs if c.k == k]
        for drafter in lay.drafters:
            for i, t in enumerate(translators):
                xs = [100 * r.acceptance_rate for r, c in panel if c.drafter == drafter and c.translator == t]
                ys = [r.speedup for r, c in panel if c.drafter == drafter and c.translator == t]
                if xs:
                    # Colour tells drafters apart, marker shape translators (when several are plotted).
                    label = names[drafter] + (f" · {t}" if len(translators) > 1 else "")
                    ax.scatter(xs, ys, s=18, alpha=0.6, color=colours[drafter], marker=MARKERS[i % len(MARKERS)],
                               label=label)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="baseline (1.0×)")
        fit = speedup_line([r for r, _ in panel])
        _draw_fit(ax, fit)
        ax.set_title(f"k = {k} (n = {len(panel)} runs)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, top)
        ax.set_xlabel("acceptance rate α (%)")
        ax.set_ylabel("speedup vs target alone (×)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    for ax in list(axes.flat)[len(ks):]:
        ax.set_axis_off()
    fig.suptitle(title)
    _save(fig, path)
    return path


def _draw_fit(ax, fit: LineFit) -> None:
    if fit.beta0 is None or fit.beta1 is None:
        ax.text(0.98, 0.04, f"no OLS line: {fit.reason}", ha="right", va="bottom", fontsize=8,
                transform=ax.transAxes)
        return
    xs = np.linspace(0, 1, 50)
    r2 = f" (R² {fit.r2:.2f})" if fit.r2 is not None else ""
    ax.plot(100 * xs, fit.beta0 + fit.beta1 * xs, color="dimgray", linewidth=1.5,
            label=f"OLS: {fit.beta0:.2f} + {fit.beta1:.2f}·α{r2}")
    if fit.alpha_star is None:
        note = f"no break-even: {fit.reason}"
    elif 0 <= fit.alpha_star <= 1:
        ax.axvline(100 * fit.alpha_star, color="crimson", linestyle=":", linewidth=1.2)
        ax.plot([100 * fit.alpha_star], [1.0], marker="o", color="crimson", zorder=5)
        note = f"break-even α* = {_pct(fit.alpha_star)} ± {_pct(fit.half_width)}%"
    elif fit.alpha_star > 1:
        note = f"break-even α* = {_pct(fit.alpha_star)}% (> 100%: unreachable)"
    else:
        note = f"α* = {_pct(fit.alpha_star)}% (< 0: above baseline at any α)"
    ax.text(0.98, 0.04, note, ha="right", va="bottom", fontsize=8, color="crimson", transform=ax.transAxes,
            bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))


def plot_acceptance_by_condition(records: Sequence[EvalRecord], path: str | Path) -> Path:
    """Horizontal bars of mean acceptance per condition, one panel per dataset, coloured by translator."""
    path = Path(path)
    table = condition_table(records)
    title = "Mean acceptance rate per condition"
    if not table.rows:
        _empty_plot(path, title, "no speculative runs in the records")
        return path
    conditions = [row.condition for row in table.rows]
    fields = _varying(conditions) or ["drafter"]
    labels = [_label(c, fields, short=_shorts_unique(conditions)) for c in conditions]
    translators = list(dict.fromkeys(c.translator for c in conditions))
    colours = {t: f"C{i % 10}" for i, t in enumerate(translators)}
    n = len(conditions)
    fig = Figure(figsize=(1.6 + 4.2 * len(table.datasets), 1.4 + 0.32 * n), layout="constrained")
    axes = fig.subplots(1, len(table.datasets), squeeze=False, sharey=True)[0]
    y = np.arange(n)
    for ax, d in zip(axes, table.datasets):
        means = [100 * row.cells[d].acceptance if d in row.cells else np.nan for row in table.rows]
        errors = [100 * row.cells[d].acceptance_se if d in row.cells else 0.0 for row in table.rows]
        ax.barh(y, np.nan_to_num(means), xerr=errors, color=[colours[c.translator] for c in conditions],
                error_kw=dict(ecolor="black", capsize=2, linewidth=0.8))
        for yi, m, e in zip(y, means, errors):
            # Past the error bar's cap, so the number stays legible.
            ax.text(0.5 if np.isnan(m) else m + e + 1.5, yi, "no data" if np.isnan(m) else f"{m:.1f}",
                    va="center", fontsize=7, color="gray" if np.isnan(m) else "black")
        ax.set_title(f"dataset: {d}")
        ax.set_xlim(0, 100)
        ax.set_xlabel("mean acceptance rate α (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_ylabel("condition")
    fig.legend(handles=[Patch(color=colours[t], label=t) for t in translators], title="translator",
               loc="outside right upper", fontsize=8)
    fig.suptitle(title + " (error bars: ±1 standard error over prompts)")
    _save(fig, path)
    return path
