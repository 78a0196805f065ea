"""Prompt sets for ``specfw eval``: bundled sets, pl-grammar, JSONL files and tables."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
import sysconfig
from pathlib import Path

import pytest

from specfw.study.datasets import BUNDLED, REWRITE_KINDS, PromptItem, load_dataset, quoted_names, split_sentences
from specfw.errors import SpecfwError

POLISH_LETTERS = set("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ")
HAS_GRAMMAR = importlib.util.find_spec("lingotweaker_data_pl") is not None
HAS_DATASETS = importlib.util.find_spec("datasets") is not None


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _one_line_error(excinfo: pytest.ExceptionInfo[SpecfwError]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# --- bundled sets ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "minimum"), [("pl-questions", 50), ("en-prompts", 30)])
def test_bundled_sets_load(name: str, minimum: int) -> None:
    items = load_dataset(name)
    assert len(items) >= minimum
    assert all(isinstance(item, PromptItem) and item.dataset == name for item in items)
    assert len({item.id for item in items}) == len(items)
    assert len({item.prompt for item in items}) == len(items)
    assert all(item.prompt.strip() == item.prompt and item.prompt for item in items)
    assert name in BUNDLED


def test_bundled_ids_follow_the_naming_scheme() -> None:
    assert [item.id for item in load_dataset("pl-questions", limit=3)] == ["plq-001", "plq-002", "plq-003"]


def test_polish_questions_are_polish() -> None:
    items = load_dataset("pl-questions")
    with_diacritics = [item for item in items if POLISH_LETTERS & set(item.prompt)]
    assert len(with_diacritics) >= len(items) // 2
    assert sum(item.prompt.endswith("?") for item in items) >= len(items) * 0.9


def test_english_prompts_have_no_polish_letters() -> None:
    assert not any(POLISH_LETTERS & set(item.prompt) for item in load_dataset("en-prompts"))


def test_limit_keeps_the_first_items() -> None:
    full = load_dataset("en-prompts")
    assert load_dataset("en-prompts", limit=5) == full[:5]
    assert load_dataset("en-prompts", limit=0) == []
    assert load_dataset("en-prompts", limit=10_000) == full


def test_negative_limit_is_an_error() -> None:
    with pytest.raises(SpecfwError, match="limit"):
        load_dataset("en-prompts", limit=-1)


def test_unknown_name_lists_the_bundled_sets() -> None:
    with pytest.raises(SpecfwError) as excinfo:
        load_dataset("pl-questionz")
    message = _one_line_error(excinfo)
    assert "pl-questionz" in message
    assert all(name in message for name in BUNDLED)


# --- pl-grammar ----------------------------------------------------------------------------------

# Both taken from the rule group ZDANIA_ZLOZONE of LanguageTool's Polish grammar.xml.
GRAMMAR_CORRECT = "Kupiłem wino, chciałem też pić wodę."
GRAMMAR_INCORRECT = (
    "Kupiłem wino chciałem też pić wodę.",  # <example correction=""> of the same rule group
    "Zzuwszy buty Marek zatruł atmosferę na sali.",
)
MARKUP = re.compile(r"</?[A-Za-z][\w:-]*(\s[^<>]*)?/?>")


@pytest.mark.skipif(not HAS_GRAMMAR, reason="lingotweaker-data-pl is not installed (it comes with the test extra)")
def test_pl_grammar_loads_correct_sentences_only() -> None:
    items = load_dataset("pl-grammar")
    assert len(items) > 1000
    prompts = [item.prompt for item in items]
    assert len(set(prompts)) == len(prompts)
    assert len({item.id for item in items}) == len(items)
    assert all(item.dataset == "pl-grammar" for item in items)
    assert not any(MARKUP.search(prompt) for prompt in prompts)
    assert all(len(prompt.split()) >= 4 and " ".join(prompt.split()) == prompt for prompt in prompts)
    assert GRAMMAR_CORRECT in prompts
    assert not set(GRAMMAR_INCORRECT) & set(prompts)
    # "To jest zdanie." is a correct example but has only three words.
    assert "To jest zdanie." not in prompts
    first = items[prompts.index(GRAMMAR_CORRECT)]
    assert re.fullmatch(r"ZDANIA_ZLOZONE-\d+", first.id)


@pytest.mark.skipif(not HAS_GRAMMAR, reason="lingotweaker-data-pl is not installed (it comes with the test extra)")
def test_pl_grammar_limit() -> None:
    assert load_dataset("pl-grammar", limit=7) == load_dataset("pl-grammar")[:7]


def test_pl_grammar_without_the_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import specfw.study.datasets as module

    module._load_pl_grammar.cache_clear()
    monkeypatch.setitem(sys.modules, "lingotweaker_data_pl", None)  # makes the import fail
    try:
        with pytest.raises(SpecfwError) as excinfo:
            load_dataset("pl-grammar")
    finally:
        module._load_pl_grammar.cache_clear()
    assert "pip install lingotweaker-data-pl" in _one_line_error(excinfo)


def test_grammar_examples_parsing_rules() -> None:
    import xml.etree.ElementTree as ET

    from specfw.study.datasets import grammar_examples

    root = ET.fromstring(
        """<rules><category id="C">
        <rulegroup id="GROUP">
          <rule><example>Jedno  dobre
             zdanie tutaj.</example><example correction="x">Złe <marker>zdanie</marker> jest tutaj.</example></rule>
          <rule id="OWN"><example type="correct">Ma <marker>własny</marker> identyfikator reguły.</example>
            <example type="incorrect">Złe zdanie jest gdzie indziej.</example></rule>
        </rulegroup>
        <rule id="SOLO"><example>Za krótkie zdanie.</example><example>Jedno dobre zdanie tutaj.</example>
          <example>Złe zdanie jest gdzie indziej.</example><example>Drugie dobre zdanie w tej regule.</example></rule>
        </category></rules>"""
    )
    assert [(item.id, item.prompt) for item in grammar_examples(root)] == [
        ("GROUP-1", "Jedno dobre zdanie tutaj."),
        ("OWN-1", "Ma własny identyfikator reguły."),
        ("SOLO-1", "Drugie dobre zdanie w tej regule."),
    ]


# --- en-prose, pl-prose, code, rewrite: read from installed packages ------------------------------

SOURCE_SETS = ("en-prose", "pl-prose", "code", "rewrite")
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _clear_source_caches() -> None:
    import specfw.study.datasets as module

    for loader in (module._load_pl_grammar, module._pydoc_paragraphs, module._load_en_prose, module._load_pl_prose,
                   module._load_code, module._load_rewrite):
        loader.cache_clear()


def _stdlib_source(module: str) -> str:
    base = STDLIB.joinpath(*module.split("."))
    return (base / "__init__.py" if base.is_dir() else base.with_suffix(".py")).read_text(encoding="utf-8")


def _pydoc_text() -> str:
    from pydoc_data.topics import topics

    return "\n".join(" ".join(topic.split()) for topic in topics.values())


@pytest.mark.parametrize("name", SOURCE_SETS)
def test_source_sets_load_stable_unique_prompts(name: str) -> None:
    if name == "pl-prose" and not HAS_GRAMMAR:
        pytest.skip("lingotweaker-data-pl is not installed (it comes with the test extra)")
    items = load_dataset(name)
    assert name in BUNDLED
    assert len(items) >= 16
    assert all(isinstance(item, PromptItem) and item.dataset == name for item in items)
    assert all(item.prompt.strip() for item in items)
    assert len({item.id for item in items}) == len(items)
    assert len({item.prompt for item in items}) == len(items)
    low = 160 if name == "pl-prose" else 200
    assert all(low <= len(item.prompt) <= 800 for item in items), [len(i.prompt) for i in items]
    _clear_source_caches()
    assert load_dataset(name) == items  # the same prompts, ids and order when read again
    assert load_dataset(name, limit=5) == items[:5]


def test_en_prose_is_the_start_of_a_longer_paragraph() -> None:
    text = _pydoc_text()
    for item in load_dataset("en-prose"):
        assert item.prompt[-1] in ".!?\"')", item.prompt
        assert not POLISH_LETTERS & set(item.prompt)
        at = text.find(item.prompt)
        assert at >= 0, item.id
        assert text[at + len(item.prompt)] == " "  # the paragraph goes on: cut between two sentences
        assert 1 <= len(split_sentences(item.prompt)) <= 3


@pytest.mark.skipif(not HAS_GRAMMAR, reason="lingotweaker-data-pl is not installed (it comes with the test extra)")
def test_pl_prose_is_the_long_polish_grammar_sentences() -> None:
    prose = load_dataset("pl-prose")
    grammar = {item.id: item.prompt for item in load_dataset("pl-grammar")}
    assert all(grammar[item.id] == item.prompt and len(item.prompt) >= 160 for item in prose)
    assert [item.id for item in prose] == [i for i, p in grammar.items() if len(p) >= 160]
    assert sum(bool(POLISH_LETTERS & set(item.prompt)) for item in prose) >= len(prose) * 0.9


def test_pl_prose_without_the_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_source_caches()
    monkeypatch.setitem(sys.modules, "lingotweaker_data_pl", None)
    try:
        with pytest.raises(SpecfwError) as excinfo:
            load_dataset("pl-prose")
    finally:
        _clear_source_caches()
    message = _one_line_error(excinfo)
    assert "pl-prose" in message and "pip install lingotweaker-data-pl" in message


def test_code_continuations_are_the_start_of_real_stdlib_functions() -> None:
    items = load_dataset("code")
    continuations = [item for item in items if item.id.startswith("cont-")]
    assert len(continuations) >= 16
    assert [item.id[:5] for item in items[:4]] == ["cont-", "edit-", "cont-", "edit-"]  # the kinds alternate
    for item in continuations:
        module, function = item.id[len("cont-"):].rsplit(".", 1)
        assert item.prompt.startswith(f"def {function}(")
        source = _stdlib_source(module)
        assert item.prompt in source
        node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == function)
        assert ast.get_docstring(node, clean=False).splitlines()[-1] in item.prompt  # the whole docstring


def test_code_edits_hold_the_function_the_answer_repeats() -> None:
    edits = [item for item in load_dataset("code") if item.id.startswith("edit-")]
    assert len(edits) >= 16
    for item in edits:
        module, function = item.id[len("edit-"):].rsplit(".", 1)
        original, instruction, start = re.fullmatch(r"(.*)\n\n\n(# The same function[^\n]*)\n(.*)\n", item.prompt,
                                                    re.S).groups()
        assert original in _stdlib_source(module)
        node = ast.parse(original).body[0]
        assert isinstance(node, ast.FunctionDef) and node.name == function
        lines = original.splitlines()
        body = "\n".join(lines[node.body[1].lineno - 1:])  # what follows the docstring: the answer repeats it
        assert body.strip() and body in item.prompt
        if "renamed to" in instruction:
            assert start.startswith(f"def {function}_v2(") and f"{function}_v2" in instruction
        else:
            assert "without its docstring" in instruction and lines[0] == start.splitlines()[0]


def test_code_without_the_stdlib_source_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import specfw.study.datasets as module

    _clear_source_caches()
    monkeypatch.setattr(module.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    try:
        with pytest.raises(SpecfwError) as excinfo:
            load_dataset("code")
    finally:
        _clear_source_caches()
    assert "textwrap.py" in _one_line_error(excinfo)


def test_prose_without_pydoc_data_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_source_caches()
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)
    try:
        for name in ("en-prose", "rewrite"):
            with pytest.raises(SpecfwError) as excinfo:
                load_dataset(name)
            assert name in _one_line_error(excinfo) and "pydoc_data" in str(excinfo.value)
    finally:
        _clear_source_caches()


def test_rewrite_prompts_hold_what_the_answer_repeats() -> None:
    items = load_dataset("rewrite")
    source = _pydoc_text()
    instructions = {instruction: kind for kind, (instruction, _) in REWRITE_KINDS.items()}
    kinds = set()
    for item in items:
        text, instruction, start = re.fullmatch(r"Text: (.*)\n(.*)\n(.*)", item.prompt, re.S).groups()
        kind = instructions[instruction]
        kinds.add(kind)
        assert item.id.endswith(f"-{kind}") and start == REWRITE_KINDS[kind][1]
        assert text in source  # a real paragraph
        if kind == "names":
            assert len(quoted_names(text)) >= 2 and all(f'"{n}"' in text for n in quoted_names(text))
        else:
            sentences = split_sentences(text)
            assert len(sentences) >= 2 and " ".join(sentences) == text
    assert kinds == set(REWRITE_KINDS)


def test_split_sentences_and_quoted_names() -> None:
    assert split_sentences("One two.  Three \"x\" four!  (Five) six? e.g. seven.") == [
        "One two.", "Three \"x\" four!", "(Five) six? e.g. seven."]
    assert quoted_names('Use "len()" and "x.y", not "two words" or "len()" again.') == ["len()", "x.y"]


# --- JSONL files ---------------------------------------------------------------------------------


def test_jsonl_question_style(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "moje.jsonl",
        [json.dumps({"id": "a", "prompt": "Co to jest?"}), "", json.dumps({"id": 7, "prompt": "Jak to działa?"})],
    )
    assert load_dataset(str(path)) == [
        PromptItem("moje", "a", "Co to jest?"),
        PromptItem("moje", "7", "Jak to działa?"),
    ]


def test_jsonl_continuation_style_uses_line_numbers(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "cont.jsonl",
        [json.dumps({"text": "Dawno, dawno temu"}), "   ", json.dumps({"text": "Pewnego dnia"})],
    )
    assert load_dataset(str(path)) == [
        PromptItem("cont", "1", "Dawno, dawno temu"),
        PromptItem("cont", "3", "Pewnego dnia"),
    ]


def test_jsonl_id_with_text_and_dedupe_and_limit(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "mixed.jsonl",
        [
            json.dumps({"id": "x1", "text": "Pierwszy."}),
            json.dumps({"id": "x2", "text": "Pierwszy."}),
            json.dumps({"id": "x3", "text": "Drugi."}),
            json.dumps({"id": "x4", "text": "Trzeci."}),
        ],
    )
    assert [item.id for item in load_dataset(str(path))] == ["x1", "x3", "x4"]
    assert [item.id for item in load_dataset(str(path), limit=2)] == ["x1", "x3"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"id": "q", "question": "?"}), '"prompt" or "text"'),
        (json.dumps({"prompt": ""}), "non-empty"),
        (json.dumps({"prompt": 3}), "non-empty string"),
        (json.dumps({"id": None, "prompt": "ok"}), '"id"'),
        (json.dumps({"id": "a", "prompt": "again"}), "already used on line 1"),
    ],
)
def test_jsonl_bad_line_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps({"id": "a", "prompt": "ok"}), "", line])
    with pytest.raises(SpecfwError) as excinfo:
        load_dataset(str(path))
    message = _one_line_error(excinfo)
    assert str(path) in message and "line 3" in message and expected in message


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_jsonl_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SpecfwError) as excinfo:
        load_dataset(str(path))
    message = _one_line_error(excinfo)
    assert str(path) in message and "no prompts" in message


def test_missing_file_is_an_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(SpecfwError, match="unknown dataset"):
        load_dataset(str(tmp_path / "nope.jsonl"))


# --- tables without `datasets`: json / jsonl / csv files ---------------------------------------


def test_json_array_file_picks_the_text_column(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    rows = [{"instruction": "Napisz wiersz.", "output": "..."}, {"instruction": "Policz do trzech.", "output": "1 2 3"}]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    assert load_dataset(str(path)) == [
        PromptItem("table", "0", "Napisz wiersz."),
        PromptItem("table", "1", "Policz do trzech."),
    ]


def test_hf_prefix_reads_a_jsonl_file_as_a_table(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "qa.jsonl",
        [
            json.dumps({"id": "q1", "question": "Gdzie leży Gdańsk?", "text": "ignored"}),
            json.dumps({"question": "Kto?"}),
        ],
    )
    # "prompt" and "instruction" are absent, so "question" wins over "text"; the id falls back to the row index.
    assert load_dataset(f"hf:{path}") == [PromptItem("qa", "q1", "Gdzie leży Gdańsk?"), PromptItem("qa", "1", "Kto?")]


def test_csv_file_and_missing_text_column(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("id,prompt\nr1,Jak się masz?\nr2,Co słychać?\n", encoding="utf-8")
    assert [item.id for item in load_dataset(str(good))] == ["r1", "r2"]

    bad = tmp_path / "bad.csv"
    bad.write_text("title,body\na,b\n", encoding="utf-8")
    with pytest.raises(SpecfwError) as excinfo:
        load_dataset(str(bad))
    message = _one_line_error(excinfo)
    assert "title" in message and "body" in message and "prompt" in message


# --- tables through Hugging Face `datasets` ----------------------------------------------------


def test_hf_route_without_datasets_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the optional package were not installed
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "state.json").write_text("{}", encoding="utf-8")
    for spec in (str(folder), f"hf:{folder}", "hf:someone/some-prompts:test"):
        with pytest.raises(SpecfwError) as excinfo:
            load_dataset(spec)
        assert "pip install datasets" in _one_line_error(excinfo)


@pytest.mark.skipif(not HAS_DATASETS, reason="the optional package `datasets` is not installed")
def test_hf_saved_dataset(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "saved_prompts"
    datasets.Dataset.from_dict(
        {"id": ["a", "b", "c"], "question": ["Jak?", "Dlaczego?", "Jak?"], "answer": ["1", "2", "3"]}
    ).save_to_disk(str(folder))
    expected = [PromptItem("saved_prompts", "a", "Jak?"), PromptItem("saved_prompts", "b", "Dlaczego?")]
    assert load_dataset(str(folder)) == expected
    assert load_dataset(f"hf:{folder}", limit=1) == expected[:1]

    splits = tmp_path / "with_splits"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["uczący"]}),
            "test": datasets.Dataset.from_dict({"text": ["testowy", "drugi"]}),
        }
    ).save_to_disk(str(splits))
    assert load_dataset(str(splits)) == [PromptItem("with_splits", "0", "uczący")]
    assert [item.prompt for item in load_dataset(f"hf:{splits}:test")] == ["testowy", "drugi"]
    with pytest.raises(SpecfwError) as excinfo:
        load_dataset(f"hf:{splits}:validation")
    assert "train" in _one_line_error(excinfo)


@pytest.mark.skipif(not HAS_DATASETS, reason="the optional package `datasets` is not installed")
def test_hf_data_folder_and_missing_column(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    _write_lines(folder / "train.jsonl", [json.dumps({"input": "Pierwsze"}), json.dumps({"input": "Drugie"})])
    assert [item.prompt for item in load_dataset(str(folder))] == ["Pierwsze", "Drugie"]

    import datasets

    no_text = tmp_path / "no_text"
    datasets.Dataset.from_dict({"label": [1, 2]}).save_to_disk(str(no_text))
    with pytest.raises(SpecfwError) as excinfo:
        load_dataset(str(no_text))
    assert "label" in _one_line_error(excinfo)
