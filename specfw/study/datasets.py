"""Prompt sets for ``specfw eval``.

A dataset *spec* names where the prompts come from:

* a bundled set (see :data:`BUNDLED`): ``pl-questions``, ``en-prompts``,
  ``pl-grammar``, ``en-prose``, ``pl-prose``, ``code`` or ``rewrite`` (the last
  five are read at run time from installed packages, never copied here);
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

import ast
import csv
import importlib
import json
import re
import sysconfig
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
    "en-prose": "English prose continuation: the first sentences of paragraphs of the Python Language "
    "Reference, read from the standard library's pydoc_data.topics (PSF license)",
    "pl-prose": "Polish prose continuation: the long (160+ characters) correct example sentences of "
    "LanguageTool's Polish grammar rules, mostly press and encyclopedia prose; single sentences, not "
    "paragraphs (LGPL; needs: pip install lingotweaker-data-pl)",
    "code": "Python code: the start of standard-library functions (signature, docstring, first lines) and "
    "edits that repeat a whole function, read from the installed standard library's source (PSF license)",
    "rewrite": "rewrite and extract prompts whose answer repeats the prompt's text (sentence per line, "
    "numbered or bulleted sentences, quoted names), built from paragraphs of pydoc_data.topics (PSF license)",
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
    if spec in _SOURCE_SETS:
        return list(_SOURCE_SETS[spec]())
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
    resource = resources.files("specfw.study").joinpath("data", _BUNDLED_FILES[name])
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


# --- en-prose, pl-prose, code, rewrite: real text read from installed packages ------------------

_PROSE_MIN_CHARS = 200  # en-prose: the prompt's sentences reach at least this many characters ...
_PROSE_MAX_CHARS = 800  # ... and no more than this
_PROSE_MAX_SENTENCES = 3
_PL_PROSE_MIN_CHARS = 160
_REWRITE_MIN_CHARS, _REWRITE_MAX_CHARS = 150, 600
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
_QUOTED_NAME = re.compile(r'"([A-Za-z_][A-Za-z0-9_.]*(?:\(\))?)"')
# Standard-library modules whose public functions feed ``code``, in this order: stable, pure-Python modules.
CODE_MODULES: tuple[str, ...] = (
    "textwrap", "shlex", "fnmatch", "posixpath", "genericpath", "glob", "heapq", "bisect", "colorsys",
    "calendar", "difflib", "string", "base64", "quopri", "html", "urllib.parse", "statistics", "copy",
    "pprint", "gettext", "mimetypes", "shutil", "tempfile", "tokenize", "ipaddress", "json", "csv",
    "functools", "keyword", "linecache", "platform", "sysconfig", "traceback", "inspect", "dataclasses",
)
_CODE_PER_KIND = 16  # continuation prompts, and as many edit prompts
_CODE_MAX_LINES_AFTER_DOC = 3  # continuation: at most this many body lines after the docstring
_EDIT_MAX_CHARS = 600  # edit: the whole function's source, at most this long
# (instruction, what the edited version starts with) for edit prompts, used in turn
EDIT_INSTRUCTIONS: tuple[str, ...] = ("renamed", "without its docstring")
# rewrite kinds: (instruction line, the start of the answer); the answer repeats the text's sentences or names
REWRITE_KINDS: dict[str, tuple[str, str]] = {
    "lines": ("The same text with every sentence on its own line:", ""),
    "numbered": ("The sentences of the text as a numbered list:", "1."),
    "names": ("The quoted names in the text, one per line:", ""),
    "bullets": ("The same text as a bulleted list, one sentence per item:", "-"),
}


def split_sentences(text: str) -> list[str]:
    """``text`` (whitespace normalised) cut after ``.``, ``!`` or ``?`` followed by a capital, quote or paren."""
    return [part for part in _SENTENCE_END.split(" ".join(text.split())) if part]


def quoted_names(text: str) -> list[str]:
    """The distinct ``"name"`` spans of a pydoc text (how it marks code), in order of first appearance."""
    return list(dict.fromkeys(_QUOTED_NAME.findall(text)))


@lru_cache(maxsize=1)
def _pydoc_paragraphs(dataset: str) -> tuple[tuple[str, int, str], ...]:
    """(topic, paragraph number, text) of every prose paragraph of ``pydoc_data.topics``, topics sorted.

    A paragraph is kept when it is not indented (code, grammar), not a heading, does not end with ``:``
    (it introduces a code block) and holds no ``::=``; its whitespace is normalised.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as err:
        raise SpecfwError(
            f"{dataset} reads the Python standard library's pydoc_data.topics, which this Python lacks; "
            "install the full standard library (e.g. apt install libpython3-stdlib)"
        ) from err
    out: list[tuple[str, int, str]] = []
    for topic in sorted(topics):
        for number, block in enumerate(topics[topic].split("\n\n")):
            lines = block.strip("\n").splitlines()
            if not lines or lines[0][:1].isspace() or any(set(line) <= set("*=-^~") for line in lines):
                continue
            text = " ".join(block.split())
            if text.endswith(":") or "::=" in text or ">>>" in text:
                continue
            out.append((topic, number, text))
    return tuple(out)


@lru_cache(maxsize=1)
def _load_en_prose() -> tuple[PromptItem, ...]:
    """``en-prose``: per topic of even position (sorted), the first paragraph whose first 1-3 sentences make
    200-800 characters with at least one sentence left after them; the prompt is those sentences."""
    paragraphs = _pydoc_paragraphs("en-prose")
    topics = sorted({topic for topic, _, _ in paragraphs})
    wanted = set(topics[0::2])
    items: list[PromptItem] = []
    taken: set[str] = set()
    for topic, number, text in paragraphs:
        if topic not in wanted or topic in taken:
            continue
        sentences = split_sentences(text)
        for count in range(1, min(_PROSE_MAX_SENTENCES, len(sentences) - 1) + 1):
            prompt = " ".join(sentences[:count])
            if len(prompt) > _PROSE_MAX_CHARS:
                break
            if len(prompt) >= _PROSE_MIN_CHARS:
                items.append(PromptItem(dataset="en-prose", id=f"{topic}-{number}", prompt=prompt))
                taken.add(topic)
                break
    return tuple(_dedupe(items))


@lru_cache(maxsize=1)
def _load_rewrite() -> tuple[PromptItem, ...]:
    """``rewrite``: per topic of odd position (sorted), the first paragraph of 150-600 characters that the
    next kind in :data:`REWRITE_KINDS` fits (two or more sentences; two or more quoted names for ``names``).

    The prompt is ``Text: <paragraph>\\n<instruction>\\n<start of the answer>``.
    """
    paragraphs = _pydoc_paragraphs("rewrite")
    topics = sorted({topic for topic, _, _ in paragraphs})
    wanted = set(topics[1::2])
    kinds = list(REWRITE_KINDS)
    items: list[PromptItem] = []
    taken: set[str] = set()
    for topic, number, text in paragraphs:
        if topic not in wanted or topic in taken or not _REWRITE_MIN_CHARS <= len(text) <= _REWRITE_MAX_CHARS:
            continue
        if len(split_sentences(text)) < 2:
            continue
        for shift in range(len(kinds)):
            kind = kinds[(len(items) + shift) % len(kinds)]
            if kind == "names" and len(quoted_names(text)) < 2:
                continue
            instruction, start = REWRITE_KINDS[kind]
            prompt = f"Text: {text}\n{instruction}\n{start}"
            items.append(PromptItem(dataset="rewrite", id=f"{topic}-{number}-{kind}", prompt=prompt))
            taken.add(topic)
            break
    return tuple(_dedupe(items))


@lru_cache(maxsize=1)
def _load_pl_prose() -> tuple[PromptItem, ...]:
    """``pl-prose``: the ``pl-grammar`` sentences of 160 characters or more, in the same order, same ids."""
    try:
        sentences = _load_pl_grammar()
    except SpecfwError as err:
        raise SpecfwError(str(err).replace("pl-grammar", "pl-prose", 1)) from err
    return tuple(PromptItem(dataset="pl-prose", id=item.id, prompt=item.prompt)
                 for item in sentences if len(item.prompt) >= _PL_PROSE_MIN_CHARS)


def _module_source(name: str) -> str:
    """The source of a standard-library module, read from the standard library's folder (not imported)."""
    base = Path(sysconfig.get_paths()["stdlib"]).joinpath(*name.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecfwError(
            f"code reads the Python standard library's source files, but {path} is not installed with this "
            "Python; install the full standard library (e.g. apt install libpython3-stdlib)"
        ) from None
    except OSError as err:
        raise SpecfwError(f"code: cannot read {path} ({err.strerror or err})") from err


def _public_functions(source: str) -> Iterator[tuple[ast.FunctionDef, list[str]]]:
    """Top-level public functions that have a docstring, with the source lines of each (decorators left out)."""
    lines = source.splitlines()
    for node in ast.parse(source).body:
        if (isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and ast.get_docstring(node)
                and node.end_lineno is not None):
            yield node, lines[node.lineno - 1 : node.end_lineno]


def _continuation_prompt(node: ast.FunctionDef, lines: list[str]) -> str | None:
    """Signature, docstring and the first body lines, 200-800 characters, with three or more lines left."""
    doc_end = node.body[0].end_lineno
    if doc_end is None or len(node.body) < 2:
        return None
    first = node.lineno
    for extra in range(1, _CODE_MAX_LINES_AFTER_DOC + 1):
        cut = doc_end - first + 1 + extra
        if len(lines) - cut < 3:
            return None
        prompt = "\n".join(lines[:cut]) + "\n"
        if not lines[cut - 1].strip():
            continue
        if len(prompt) > _PROSE_MAX_CHARS:
            return None
        if len(prompt) >= _PROSE_MIN_CHARS:
            return prompt
    return None


def _edit_prompt(node: ast.FunctionDef, lines: list[str], instruction: str) -> str | None:
    """The whole function, an instruction that keeps almost all of it, and the first line of the edited one."""
    function = "\n".join(lines)
    if len(function) > _EDIT_MAX_CHARS or len(lines) < 5:
        return None
    header_end = node.body[0].lineno - node.lineno  # lines of the signature
    signature = "\n".join(lines[:header_end])
    if instruction == "renamed":
        new = f"{node.name}_v2"
        comment = f"# The same function, renamed to {new}; everything else unchanged:"
        start = signature.replace(f"def {node.name}(", f"def {new}(", 1) + "\n"
    else:
        comment = "# The same function without its docstring; everything else unchanged:"
        start = signature + "\n"
    return f"{function}\n\n\n{comment}\n{start}"


@lru_cache(maxsize=1)
def _load_code() -> tuple[PromptItem, ...]:
    """``code``: from :data:`CODE_MODULES` in order, each module's first public function with a docstring that
    makes a continuation prompt, and its first other one short enough for an edit prompt; continuation and edit
    prompts alternate, 16 of each. Ids: ``cont-<module>.<function>`` and ``edit-<module>.<function>``."""
    continuations: list[PromptItem] = []
    edits: list[PromptItem] = []
    for module in CODE_MODULES:
        if len(continuations) >= _CODE_PER_KIND and len(edits) >= _CODE_PER_KIND:
            break
        used: set[str] = set()
        for node, lines in _public_functions(_module_source(module)):
            name = f"{module}.{node.name}"
            if len(continuations) < _CODE_PER_KIND and not any(i.id.startswith(f"cont-{module}.") for i in continuations):
                prompt = _continuation_prompt(node, lines)
                if prompt is not None:
                    continuations.append(PromptItem(dataset="code", id=f"cont-{name}", prompt=prompt))
                    used.add(node.name)
                    continue
            if len(edits) < _CODE_PER_KIND and not any(i.id.startswith(f"edit-{module}.") for i in edits):
                instruction = EDIT_INSTRUCTIONS[len(edits) % len(EDIT_INSTRUCTIONS)]
                prompt = _edit_prompt(node, lines, instruction)
                if prompt is not None:
                    edits.append(PromptItem(dataset="code", id=f"edit-{name}", prompt=prompt))
    items = [item for pair in zip(continuations, edits) for item in pair]
    items += continuations[len(edits):] + edits[len(continuations):]
    return tuple(_dedupe(items))


_SOURCE_SETS: dict[str, Callable[[], tuple[PromptItem, ...]]] = {
    "en-prose": _load_en_prose,
    "pl-prose": _load_pl_prose,
    "code": _load_code,
    "rewrite": _load_rewrite,
}


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
