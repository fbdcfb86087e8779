"""Render ``mova.answer/1`` records for people: CSV (spreadsheets), Markdown, one JSON array, or plain text.

JSONL stays the canonical output (resume, merge and status read it); these are views of it.

Plain text is one line per record, so line N is item N (``wc -l``, ``paste``, ``| less``): the answer
with its newlines written as ``\\n`` (and backslashes doubled, so the line reads back exactly); an
error record as ``ERROR stage/type: message``; a ``--route-only`` record as ``experts: a,b`` (or
``experts: none``).

Structured answers (``--schema``): CSV and Markdown get one more column per top-level property of
the records' schemas (``answer.total``, ``answer.currency``, in the schema's order, then the next
schema's new ones), holding that field of ``answer_json`` (nested values as compact JSON).
"""

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson

FORMATS = ("csv", "md", "json", "text")
ERROR_PREFIX = "ERROR "
COLUMNS = ("id", "path", "page", "prompt_id", "prompt", "status", "answer", "experts", "router_text", "error")
FIELD_PREFIX = "answer."  # columns of a schema's top-level properties


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


def _text_line(record: dict[str, Any]) -> str:
    """One record as one line of plain text (see the module docstring)."""
    if record.get("status") != "ok":
        error = record.get("error") or {}
        return _one_line(f"{ERROR_PREFIX}{error.get('stage')}/{error.get('type')}: {error.get('message')}")
    if record.get("answer") is None and record.get("experts") is not None:
        return "experts: " + (",".join(record["experts"].get("chosen") or []) or "none")
    return _one_line(record.get("answer") or "")


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


def render(records: Sequence[dict[str, Any]], fmt: str) -> bytes:
    """All ``records`` in ``fmt`` (one of ``FORMATS``)."""
    if fmt == "json":
        return orjson.dumps(list(records), option=orjson.OPT_INDENT_2) + b"\n"
    fields = _schema_fields(records)
    extra = [FIELD_PREFIX + name for name in fields]
    rows = [{**_row(record), **_field_cells(record, fields)} for record in records]
    if fmt == "csv":
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS, *extra], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().encode()
    if fmt == "md":
        columns = ("path", "page", "prompt", "status", "answer", *extra, "experts", "error")
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_markdown_cell(row[c]) for c in columns) + " |" for row in rows]
        return ("\n".join(lines) + "\n").encode()
    if fmt == "text":
        return "".join(_text_line(record) + "\n" for record in records).encode()
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


__all__ = ["COLUMNS", "ERROR_PREFIX", "FIELD_PREFIX", "FORMATS", "render"]
