"""Render ``mova.answer/1`` records for people: CSV (spreadsheets), Markdown, one JSON array, or plain text.

JSONL stays the canonical output (resume, merge and status read it); these are views of it.

Plain text is one line per record, so line N is item N (``wc -l``, ``paste``, ``| less``): the item
(``path[:page] [prompt id]``), a tab, then the answer with its newlines written as ``\\n`` (and
backslashes doubled, so the line reads back exactly); an error record as ``ERROR stage/type: message``;
a ``--route-only`` record as ``experts: a,b`` (or ``experts: none``).

CSV rows end in CRLF (RFC 4180), so a field holding a carriage return or a newline (an answer, a
file name) is quoted. ``columns`` picks the columns of CSV and Markdown: the flat names of ``COLUMNS``
or any record field by its dotted name (``source.path``, ``experts.chosen``, ``usage.answer_tokens``);
a list or object value is written as compact JSON.

Structured answers (``--schema``): CSV and Markdown get one more column per top-level property of
the records' schemas (``answer.total``, ``answer.currency``, in the schema's order, then the next
schema's new ones), holding that field of ``answer_json`` (nested values as compact JSON).
"""

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson

from mova.batch import jsonl
from mova.batch.parts import best_records
from mova.batch.records import SCHEMA, UnknownField, parse_field_names

FORMATS = ("csv", "md", "json", "text")
ERROR_PREFIX = "ERROR "
COLUMNS = ("id", "path", "page", "prompt_id", "prompt", "status", "answer", "experts", "router_text", "error")
FIELD_PREFIX = "answer."  # columns of a schema's top-level properties

JSONL = "jsonl"  # the format records are written in; every other --format is rendered from it


def _row(record: dict[str, Any]) -> dict[str, Any]:
    """The flat columns of one record (fields a ``--fields`` run did not keep are empty)."""
    source = record.get("source") or {}
    prompt = record.get("prompt") or {}
    experts = record.get("experts") or {}
    error = record.get("error") or {}
    return {
        "id": record.get("id"),
        "path": source.get("path"),
        "page": source.get("page"),
        "prompt_id": prompt.get("id"),
        "prompt": prompt.get("text"),
        "status": record.get("status"),
        "answer": record.get("answer"),
        "experts": "+".join(experts.get("chosen") or []),
        "router_text": experts.get("router_text"),
        "error": f"{error.get('stage')}/{error.get('type')}: {error.get('message')}" if error else None,
    }


def _markdown_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def _item_label(record: dict[str, Any]) -> str:
    """``path[:page] [prompt id]``: which item a text line is about."""
    source = record.get("source") or {}
    if source.get("path") is None:  # fields cut by --fields: the id still names the item
        return str(record.get("id"))
    where = str(source["path"])
    if source.get("page") is not None:
        where += f":{source['page']}"
    prompt_id = (record.get("prompt") or {}).get("id")
    return where + (f" [{prompt_id}]" if prompt_id is not None else "")


def _text_line(record: dict[str, Any]) -> str:
    """One record as one line of plain text, led by its item (see the module docstring)."""
    label = _item_label(record)
    if record.get("status") != "ok":
        error = record.get("error") or {}
        return _one_line(f"{label}\t{ERROR_PREFIX}{error.get('stage')}/{error.get('type')}: {error.get('message')}")
    if record.get("answer") is None and record.get("experts") is not None:
        return _one_line(f"{label}\texperts: " + (",".join(record["experts"].get("chosen") or []) or "none"))
    return _one_line(f"{label}\t{record.get('answer') or ''}")


def _schema_fields(records: Sequence[dict[str, Any]]) -> list[str]:
    """The top-level properties of every schema the records were answered under, first seen first."""
    fields: dict[str, None] = {}
    for record in records:
        schema = (record.get("prompt") or {}).get("schema")
        if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
            fields.update(dict.fromkeys(schema["properties"]))
    return list(fields)


def _field_cells(record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    value = record.get("answer_json")
    cells = {}
    for name in fields:
        cell = value.get(name) if isinstance(value, dict) else None
        if isinstance(cell, dict | list):
            cell = orjson.dumps(cell).decode()
        cells[FIELD_PREFIX + name] = cell
    return cells


def parse_columns(text: str) -> tuple[str, ...]:
    """``--columns`` -> its names, each a flat column (``COLUMNS``) or a dotted record field.

    Raises:
        ValueError: a name that is neither.
    """
    try:
        names = parse_field_names(text, below=True, also=COLUMNS)  # a column reads values at any depth
    except UnknownField as exc:
        raise ValueError(
            f"no column {exc.name!r}: use {', '.join(COLUMNS)} or a record field such as source.path or experts.chosen"
        ) from None
    if not names:
        raise ValueError("--columns needs at least one name")
    return names


def _field_value(record: dict[str, Any], name: str) -> Any:
    """The record's value at a dotted name (None where a part is missing); lists and objects as JSON."""
    value: Any = record
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


def _cells(record: dict[str, Any], row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    return {name: row[name] if name in row else _field_value(record, name) for name in columns}


def render(records: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> bytes:
    """All ``records`` in ``fmt`` (one of ``FORMATS``); ``columns`` (CSV and Markdown): which ones."""
    if fmt == "json":
        return orjson.dumps(list(records), option=orjson.OPT_INDENT_2) + b"\n"
    fields = _schema_fields(records)
    extra = [FIELD_PREFIX + name for name in fields]
    rows = [{**_row(record), **_field_cells(record, fields)} for record in records]
    if columns is not None:
        rows = [_cells(record, row, columns) for record, row in zip(records, rows, strict=True)]
    if fmt == "csv":
        buffer = io.StringIO(newline="")
        names = list(columns) if columns is not None else [*COLUMNS, *extra]
        writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().encode()
    if fmt == "md":
        columns = columns or ("path", "page", "prompt", "status", "answer", *extra, "experts", "error")
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_markdown_cell(row[c]) for c in columns) + " |" for row in rows]
        return ("\n".join(lines) + "\n").encode()
    if fmt == "text":
        return "".join(_text_line(record) + "\n" for record in records).encode()
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def records_from_jsonl(data: bytes) -> list[dict[str, Any]]:
    """The records of JSONL read from a pipe (``mova export -``), one per id as a resume keeps them; a last
    line cut short (the writer still running) is left out.

    Raises:
        ValueError: a line before the last is not JSON, or a record is not a ``mova.answer/1`` record.
    """

    lines = data.split(b"\n")
    found = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = jsonl.loads(line)
        except ValueError:
            if number == len(lines):
                break  # a torn last line
            raise ValueError(f"stdin: line {number} is not valid JSON") from None
        if not isinstance(record, dict) or record.get("schema") != SCHEMA:
            raise ValueError(f"stdin: line {number} is not a {SCHEMA} record: not a mova output")
        found.append(("<stdin>", record))
    best, _ = best_records(found)
    return [record for _, record in best.values()]


__all__ = ["COLUMNS", "ERROR_PREFIX", "FIELD_PREFIX", "FORMATS", "parse_columns", "records_from_jsonl", "render"]
