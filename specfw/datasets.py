"""Prompt sets for ``specfw eval``.

A dataset *spec* names where the prompts come from:

* a bundled set (see :data:`BUNDLED`): ``pl-questions``, ``en-prompts`` or
  ``pl-grammar``;
* a JSONL file, one ``{"id": ..., "prompt": ...}`` (question style) or
  ``{"text": ...}`` (continuation style; the id is the line number) per line;
* a table, through ``hf:PATH[:SPLIT]`` or a plain existing directory: a folder
  written by ``datasets``' ``save_to_disk``, a folder or file of
  json/jsonl/parquet/csv, or a Hugging Face hub id. Single json/jsonl/csv/tsv
  files are read without ``datasets``; everything else needs that optional
  package. The text column is the first of :data:`TEXT_COLUMNS` present.

Every route drops empty and duplicate prompts (the first one stays) and keeps
the source order; ``limit`` then keeps the first N items. Problems are raised
as one-line :class:`~specfw.errors.SpecfwError` messages.
"""

from __future__ import annotations

import csv
import importlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from specfw.errors import SpecfwError

__all__ = ["BUNDLED", "TEXT_COLUMNS", "PromptItem", "load_dataset"]


@dataclass(frozen=True)
class PromptItem:
    """One prompt: its dataset's name, an id unique within that dataset, and the text."""

    dataset: str
    id: str
    prompt: str


BUNDLED: dict[str, str] = {
    "pl-questions": "short everyday, factual and practical questions in Polish, written for specfw",
    "en-prompts": "English questions and continuation openers, written for specfw",
    "pl-grammar": "Polish continuation prompts: the correct example sentences of LanguageTool's "
    "Polish grammar rules (needs: pip install lingotweaker-data-pl)",
}

# Where a table's prompt text is looked for, in this order.
TEXT_COLUMNS: tuple[str, ...] = ("prompt", "instruction", "question", "text", "input")

_BUNDLED_FILES = {"pl-questions": "pl_questions.jsonl", "en-prompts": "en_prompts.jsonl"}
_HF_PREFIX = "hf:"
_PLAIN_TABLE_SUFFIXES = {".json", ".jsonl", ".csv", ".tsv"}
_HF_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
_TABLE_FILE_SUFFIXES = {".json", ".csv", ".tsv", ".parquet"}  # routed to the table reader without hf:

_GRAMMAR_PACKAGE = "lingotweaker_data_pl"
_GRAMMAR_RESOURCE = ("data", "pl", "rules", "grammar.xml")
_GRAMMAR_MIN_WORDS = 4


def load_dataset(spec: str, limit: int | None = None) -> list[PromptItem]:
    """The prompts named by ``spec``, in source order, deduplicated, at most ``limit`` of them."""
    if limit is not None and limit < 0:
        raise SpecfwError(f"dataset limit must be >= 0, got {limit}")
    items = _resolve(spec.strip())
    return items if limit is None else items[:limit]


def _resolve(spec: str) -> list[PromptItem]:
    if not spec:
        raise SpecfwError(f"empty dataset name; use one of {_bundled_names()}, a JSONL file or hf:PATH")
    if spec.startswith(_HF_PREFIX):
        source, split = _split_hf_spec(spec[len(_HF_PREFIX) :])
        return _load_table(source, split)
    if spec in _BUNDLED_FILES:
        return _load_bundled_jsonl(spec)
    if spec == "pl-grammar":
        return list(_load_pl_grammar())
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_table(str(path), None)
    if path.is_file():
        if path.suffix.lower() in _TABLE_FILE_SUFFIXES:
            return _load_table(str(path), None)
        return _load_jsonl_file(path)
    raise SpecfwError(
        f"unknown dataset {spec!r}: not a bundled set ({_bundled_names()}) nor an existing file or folder; "
        "for a Hugging Face hub dataset write hf:OWNER/NAME[:SPLIT]"
    )


def _bundled_names() -> str:
    return ", ".join(BUNDLED)


def _dedupe(items: Iterable[PromptItem]) -> list[PromptItem]:
    """Items with empty or already-seen prompts removed; order kept."""
    seen: set[str] = set()
    kept: list[PromptItem] = []
    for item in items:
        if item.prompt.strip() and item.prompt not in seen:
            seen.add(item.prompt)
            kept.append(item)
    return kept


# --- JSONL files (bundled sets and user files) -------------------------------------------------


def _load_bundled_jsonl(name: str) -> list[PromptItem]:
    resource = resources.files("specfw").joinpath("data", _BUNDLED_FILES[name])
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as err:  # a broken install: the package data did not ship
        raise SpecfwError(f"bundled dataset {name} is missing from this install ({err.strerror or err})") from err
    return _parse_jsonl(text.splitlines(), dataset=name, source=f"bundled {_BUNDLED_FILES[name]}")


def _read_text(path: Path) -> str:
    """A UTF-8 file's text (a BOM dropped); one-line errors for bytes that are not UTF-8 or a failed read."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpecfwError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise SpecfwError(f"{path}: cannot read ({err.strerror or err})") from err
    return text


def _load_jsonl_file(path: Path) -> list[PromptItem]:
    text = _read_text(path)
    return _parse_jsonl(text.splitlines(), dataset=path.stem, source=str(path))


def _parse_jsonl(lines: Sequence[str], dataset: str, source: str) -> list[PromptItem]:
    """Items from JSONL lines: ``{"id"?, "prompt"}`` or ``{"id"?, "text"}``; blank lines are skipped."""
    items: list[PromptItem] = []
    ids: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SpecfwError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(row, dict):
            raise SpecfwError(f"{where}: expected a JSON object, got {type(row).__name__}")
        key = "prompt" if "prompt" in row else "text" if "text" in row else None
        if key is None:
            raise SpecfwError(f"{where}: needs a \"prompt\" or \"text\" field (has: {_keys(row)})")
        prompt = row[key]
        if not isinstance(prompt, str) or not prompt.strip():
            raise SpecfwError(f"{where}: \"{key}\" must be a non-empty string")
        raw_id = row.get("id", number)
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or str(raw_id) == "":
            raise SpecfwError(f"{where}: \"id\" must be a non-empty string or an integer")
        item_id = str(raw_id)
        if item_id in ids:
            raise SpecfwError(f"{where}: id {item_id!r} already used on line {ids[item_id]}")
        ids[item_id] = number
        items.append(PromptItem(dataset=dataset, id=item_id, prompt=prompt))
    if not items:
        raise SpecfwError(f"{source} holds no prompts")
    return _dedupe(items)


def _keys(row: Mapping[str, Any]) -> str:
    return ", ".join(map(str, row)) or "none"


# --- pl-grammar: LanguageTool's Polish rule examples ---------------------------------------------


@lru_cache(maxsize=1)
def _load_pl_grammar() -> tuple[PromptItem, ...]:
    try:
        package = resources.files(_GRAMMAR_PACKAGE)
    except ImportError as err:
        raise SpecfwError(
            "pl-grammar needs LanguageTool's Polish rules: pip install lingotweaker-data-pl"
        ) from err
    resource = package.joinpath(*_GRAMMAR_RESOURCE)
    try:
        data = resource.read_bytes()
    except OSError as err:
        raise SpecfwError(
            f"pl-grammar: {'/'.join(_GRAMMAR_RESOURCE)} is missing from {_GRAMMAR_PACKAGE}; "
            "reinstall it: pip install --force-reinstall lingotweaker-data-pl"
        ) from err
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise SpecfwError(f"pl-grammar: cannot parse {'/'.join(_GRAMMAR_RESOURCE)} ({err})") from err
    return tuple(grammar_examples(root))


def grammar_examples(root: ET.Element) -> list[PromptItem]:
    """The correct example sentences of a LanguageTool rules document, as ``pl-grammar`` items.

    An ``<example>`` with a ``correction`` attribute or ``type="incorrect"`` shows
    a mistake and is left out, and so is any correct sentence that some rule
    shows as a mistake. Inner markup is dropped, whitespace normalised,
    sentences under four words and repeats are skipped. Ids are
    ``<rule id>-<n>``, counting the kept sentences of each rule (a rule without
    its own id uses its rule group's).
    """
    correct: list[tuple[str, str]] = []
    incorrect: set[str] = set()
    for rule_id, example in _examples_with_rule_ids(root, rule_id="UNNAMED"):
        sentence = " ".join("".join(example.itertext()).split())
        if _is_incorrect(example):
            incorrect.add(sentence)
        elif len(sentence.split()) >= _GRAMMAR_MIN_WORDS:
            correct.append((rule_id, sentence))

    items: list[PromptItem] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for rule_id, sentence in correct:
        if sentence in seen or sentence in incorrect:
            continue
        seen.add(sentence)
        counts[rule_id] = counts.get(rule_id, 0) + 1
        items.append(PromptItem(dataset="pl-grammar", id=f"{rule_id}-{counts[rule_id]}", prompt=sentence))
    return items


def _examples_with_rule_ids(element: ET.Element, rule_id: str) -> Iterator[tuple[str, ET.Element]]:
    """Every ``<example>`` under ``element`` in document order, with the id of its rule."""
    for child in element:
        if child.tag == "example":
            yield rule_id, child
        else:
            own = child.get("id") if child.tag in ("rule", "rulegroup") else None
            yield from _examples_with_rule_ids(child, own or rule_id)


def _is_incorrect(example: ET.Element) -> bool:
    return "correction" in example.attrib or example.get("type") in ("incorrect", "triggers_error")


# --- tables: Hugging Face datasets and plain json/csv files -------------------------------------


def _split_hf_spec(rest: str) -> tuple[str, str | None]:
    """``PATH[:SPLIT]`` → (PATH, SPLIT); a PATH that exists as written keeps any colon it has."""
    rest = rest.strip()
    if not rest:
        raise SpecfwError("hf: needs a path or hub id, e.g. hf:./my_dataset or hf:OWNER/NAME:test")
    if ":" in rest and not Path(rest).expanduser().exists():
        source, split = rest.rsplit(":", 1)
        if source and split and "/" not in split and "\\" not in split:
            return source, split
    return rest, None


def _load_table(source: str, split: str | None) -> list[PromptItem]:
    path = Path(source).expanduser()
    name = path.stem if path.exists() else source.rstrip("/").rsplit("/", 1)[-1]
    if path.is_file() and path.suffix.lower() in _PLAIN_TABLE_SUFFIXES:
        columns, rows = _read_plain_table(path)
    else:
        columns, rows = _read_hf_table(source, path, split)
    return _table_items(name, source, columns, rows)


def _table_items(name: str, source: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> list[PromptItem]:
    text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
    if text_column is None:
        raise SpecfwError(
            f"{source}: no prompt column; looked for {', '.join(TEXT_COLUMNS)} "
            f"but it has: {', '.join(map(str, columns)) or 'no columns'}"
        )
    has_id = "id" in columns
    items: list[PromptItem] = []
    ids: set[str] = set()
    for index, row in enumerate(rows):
        value = row.get(text_column)
        if value is None:
            continue
        if not isinstance(value, str):
            raise SpecfwError(
                f"{source}: row {index}: column {text_column!r} holds {type(value).__name__}, not text"
            )
        raw_id = row.get("id") if has_id else None
        item_id = str(index) if raw_id is None or raw_id == "" else str(raw_id)
        if item_id in ids:
            raise SpecfwError(f"{source}: row {index}: id {item_id!r} appears twice")
        ids.add(item_id)
        items.append(PromptItem(dataset=name, id=item_id, prompt=value))
    items = _dedupe(items)
    if not items:
        raise SpecfwError(f"{source} holds no prompts (column {text_column!r} is empty)")
    return items


def _read_plain_table(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of a json (array or JSON lines), jsonl, csv or tsv file, read with the standard library."""
    text = _read_text(path)
    suffix = path.suffix.lower()
    rows: list[dict[str, Any]]
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        rows = [dict(row) for row in reader]
        return list(reader.fieldnames or []), rows
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            loaded = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise SpecfwError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
        rows = _object_rows(loaded, path, where=lambda i: f"item {i}")
    else:
        parsed: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SpecfwError(f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno})") from err
        rows = _object_rows(parsed, path, where=lambda i: f"record {i + 1}")
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns), rows


def _object_rows(loaded: Any, path: Path, where: Callable[[int], str]) -> list[dict[str, Any]]:
    if not isinstance(loaded, list):
        raise SpecfwError(f"{path}: expected a JSON array of objects or JSON lines")
    for index, row in enumerate(loaded):
        if not isinstance(row, dict):
            raise SpecfwError(f"{path}: {where(index)} is {type(row).__name__}, not a JSON object")
    return loaded


def _read_hf_table(source: str, path: Path, split: str | None) -> tuple[list[str], Iterable[Mapping[str, Any]]]:
    """Rows through the optional ``datasets`` package: a saved dataset, data files or a hub id."""
    try:
        hf = importlib.import_module("datasets")
    except ImportError as err:
        raise SpecfwError(
            f"reading {source} needs the optional package datasets: pip install datasets"
        ) from err
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = hf.load_from_disk(str(path))
        elif path.is_file():
            builder = _HF_FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise SpecfwError(
                    f"{source}: unknown file type {path.suffix or '(none)'}; "
                    f"use one of {', '.join(sorted(_HF_FILE_BUILDERS))}"
                )
            options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            loaded = hf.load_dataset(builder, data_files=str(path), **options)
        elif path.is_dir():
            loaded = hf.load_dataset(str(path))
        else:
            loaded = hf.load_dataset(source, split=split) if split else hf.load_dataset(source)
    except SpecfwError:
        raise
    except Exception as err:  # datasets raises many kinds; the user needs one line
        first = (str(err).strip().splitlines() or [""])[0]
        raise SpecfwError(f"cannot load dataset {source}: {type(err).__name__}: {first}") from err
    table = _pick_split(loaded, source, split)
    return list(table.column_names), table


def _pick_split(loaded: Any, source: str, split: str | None) -> Any:
    """The one table to use from a ``Dataset`` or a ``DatasetDict``."""
    if not isinstance(loaded, Mapping):  # a single Dataset
        return loaded
    names = list(loaded.keys())
    if split is not None:
        if split not in loaded:
            raise SpecfwError(f"{source} has no split {split!r}; it has: {', '.join(names)}")
        return loaded[split]
    if len(names) == 1:
        return loaded[names[0]]
    if "train" in loaded:
        return loaded["train"]
    raise SpecfwError(f"{source} has several splits ({', '.join(names)}); pick one with hf:{source}:SPLIT")
