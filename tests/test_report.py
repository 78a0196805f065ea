"""report.md and its plots from a small synthetic records.jsonl (no models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from specfw.study.analysis import cost_model_speedup
from specfw.errors import SpecfwError
from specfw.study.records import EvalRecord, condition_name
from specfw.study.report import ACCEPTANCE_PLOT, HEADINGS, REPORT, SPEEDUP_PLOT, render_report, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_record(dataset: str, prompt_id: str, *, drafter: str | None = None, translator: str = "context",
                k: int = 2, acceptance: float = 0.0, speedup: float = 1.0, base_tps: float = 15.0,
                lossless: bool = True) -> EvalRecord:
    """A record with every required field; ``drafter=None`` makes the prompt's baseline."""
    tps = base_tps * speedup
    common = dict(dataset=dataset, prompt_id=prompt_id, target="tiny-target", max_tokens=32, generated=32,
                  prompt_s=0.05, decode_s=31 / tps, tps=tps, speedup=speedup, lossless=lossless,
                  target_bytes=10_000_000)
    if drafter is None:
        return EvalRecord(condition="baseline", cycles=31, proposed=0, accepted=0, acceptance_rate=0.0, **common)
    return EvalRecord(condition=condition_name(drafter, translator, k, "trim"), drafter=drafter,
                      translator=translator, k=k, cache_sync="trim", cycles=12, proposed=40,
                      accepted=round(40 * acceptance), acceptance_rate=acceptance, draft_bytes=700_000, **common)


def synthetic_records() -> list[EvalRecord]:
    rng = np.random.default_rng(3)
    records = []
    for dataset in ("wiki", "alpaca"):
        for i in range(8):
            pid = f"{dataset}-{i}"
            base = 15.0 + rng.normal(0, 0.2)
            records.append(make_record(dataset, pid, base_tps=base))
            for drafter in ("org/qwen-tiny", "llama-tiny"):
                for translator in ("none", "context"):
                    for k in (2, 4):
                        a = float(np.clip(rng.uniform(0.1, 0.8), 0, 1))
                        s = float(cost_model_speedup(a, k, 0.07, 0.17) + rng.normal(0, 0.02))
                        records.append(make_record(dataset, pid, drafter=drafter, translator=translator, k=k,
                                                   acceptance=a, speedup=s, base_tps=base))
    return records


def write_jsonl(path: Path, records: list[EvalRecord]) -> Path:
    path.write_text("".join(r.model_dump_json() + "\n" for r in records))
    return path


def test_report_has_every_table_and_valid_plots(tmp_path):
    write_jsonl(tmp_path / "records.jsonl", synthetic_records())
    report = write_report(tmp_path, tmp_path / "out")
    assert report == tmp_path / "out" / REPORT
    text = report.read_text()
    for heading in HEADINGS.values():
        assert f"## {heading}" in text
    for k in (2, 4):
        assert f"## {HEADINGS[2]} (%), k = {k}" in text and f"## {HEADINGS[3]}, k = {k}" in text
    assert "### Dataset: wiki" in text and "### Dataset: alpaca" in text and "### All datasets pooled" in text
    assert "| — | Baseline |" in text
    assert "Lossless | yes" in text and "NOT LOSSLESS" not in text
    assert "c ± SE" in text and "> 100%" in text  # k = 6, 8 of the fitted formula
    for name in (SPEEDUP_PLOT, ACCEPTANCE_PLOT):
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
        assert f"]({name})" in text
    # The report is a function of the records alone: rebuilding gives the same text.
    assert write_report(tmp_path / "records.jsonl", tmp_path / "out").read_text() == text


def test_non_lossless_record_is_flagged(tmp_path):
    records = synthetic_records()
    bad = records[3].model_copy(update={"lossless": False})
    records[3] = bad
    text = write_report(write_jsonl(tmp_path / "records.jsonl", records), tmp_path).read_text()
    assert "## ⚠ NOT LOSSLESS" in text and "**NO: 1 record(s) differ" in text
    assert f"| {bad.dataset} | {bad.prompt_id} | {bad.condition} |" in text
    # Flagged before any table.
    assert text.index("NOT LOSSLESS") < text.index(HEADINGS[2])


def test_corrupt_line_gives_one_line_error(tmp_path):
    records = synthetic_records()[:3]
    path = tmp_path / "records.jsonl"
    path.write_text(records[0].model_dump_json() + "\n" + records[1].model_dump_json()[:-9] + "\n"
                    + records[2].model_dump_json() + "\n")
    with pytest.raises(SpecfwError) as err:
        write_report(tmp_path, tmp_path / "out")
    message = str(err.value)
    assert "line 2" in message and str(path) in message and "\n" not in message
    assert not (tmp_path / "out" / REPORT).exists()


def test_thin_data_gives_n_a_instead_of_crashing(tmp_path):
    records = [make_record("wiki", "a"), make_record("wiki", "b"),
               make_record("wiki", "a", drafter="d", translator="none", acceptance=0.3, speedup=0.8),
               make_record("wiki", "b", drafter="d", translator="none", acceptance=0.3, speedup=0.9),
               make_record("solo", "z", drafter="d", translator="none", acceptance=0.5, speedup=0.9)]
    records += [make_record("flat", p) for p in "xyz"]
    records += [make_record("flat", p, drafter="d", translator="none", acceptance=0.25, speedup=0.7) for p in "xyz"]
    text = write_report(write_jsonl(tmp_path / "records.jsonl", records), tmp_path).read_text()
    assert "n/a (n = 2): too few points (need ≥ 3)" in text
    assert "n/a (n = 1): no baseline records on this dataset" in text
    assert "n/a (n = 3): zero variance in acceptance" in text
    assert "(every translator)" in text  # no context-aware runs: tables 4 and 6-10 use every translator
    assert "1 prompt(s) have speculative runs but no baseline record" in text
    for name in (SPEEDUP_PLOT, ACCEPTANCE_PLOT):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)


def test_baseline_only_records(tmp_path):
    records = [make_record("wiki", "a"), make_record("wiki", "b", base_tps=17.0)]
    text = write_report(write_jsonl(tmp_path / "records.jsonl", records), tmp_path).read_text()
    assert "No speculative runs" in text and "| wiki | 16.00 | 2 |" in text
    assert (tmp_path / SPEEDUP_PLOT).read_bytes().startswith(PNG_SIGNATURE)


def test_table3_shows_the_mean_repetition_per_dataset_beside_the_speedups():
    records = []
    for dataset, shares in (("wiki", (0.5, 0.25)), ("code", (0.75, 0.75))):
        for i, share in enumerate(shares):
            records.append(make_record(dataset, f"p{i}").model_copy(update={"repetition": share}))
            records.append(make_record(dataset, f"p{i}", drafter="d", translator="none", acceptance=0.5, speedup=1.5)
                           .model_copy(update={"repetition": share}))
    text = render_report(records)
    table3 = text[text.index(HEADINGS[3]):text.index(HEADINGS[4])]
    assert ("| Drafter | Translator | wiki TPS | wiki speedup | wiki rep. (%) | code TPS | code speedup | "
            "code rep. (%) |") in table3
    assert "| — | Baseline | 15.00 | 1.00 | 37.5 | 15.00 | 1.00 | 75.0 |" in table3
    assert "| d | none | 22.50 | **1.50** | 37.5 | 22.50 | **1.50** | 75.0 |" in table3
    assert "4-gram" in table3


def test_records_without_repetition_still_load_and_table3_leaves_the_column_out():
    old = make_record("wiki", "a").model_dump()
    del old["repetition"]  # a record written before the field existed
    assert EvalRecord.model_validate(old).repetition is None
    records = [make_record("wiki", "a"), make_record("wiki", "a", drafter="d", translator="none", acceptance=0.5)]
    assert "rep. (%)" not in render_report(records)
