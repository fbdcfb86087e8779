"""JSON-schema answers: the schema an answer must meet, its grammar, and the parsed answer.

The grammar comes from llguidance's JSON-schema compiler, strict: a keyword it cannot enforce
(``uniqueItems``, ``not``, ...) is refused up front rather than ignored, so an answer that completes
under the grammar meets the schema. Objects are closed unless the schema opens them
(``schema_closing``). No torch here: the CLI checks schemas before any model loads.
"""

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import InputError
from .schema_closing import close_objects

# Compact JSON with the separators of ``json.dumps``: one way to write each value, so the model
# cannot spend its tokens on whitespace.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_SHOWN_CHARS = 200  # how much of a failed answer an error message quotes
_SHOWN_NUMBER_CHARS = 40
# Integers that JSON tools read exactly (and records can hold): signed or unsigned 64-bit.
_INT_RANGE = (-(2**63), 2**64 - 1)


class AnswerSchemaError(InputError):
    """An answer that is not a complete JSON value meeting its schema (e.g. cut by max_new_tokens)."""


@dataclass(frozen=True)
class AnswerSchema:
    """A JSON Schema that constrains an answer.

    Attributes:
        text: the schema as compact JSON, keys in the order given (they order the answer): its identity.
    """

    text: str

    @classmethod
    def from_value(cls, value: Any) -> "AnswerSchema":
        """A checked schema from its JSON value (a dict).

        Raises:
            InputError: not a JSON object, or a schema the grammar compiler cannot enforce.
        """
        if not isinstance(value, dict):
            raise InputError(f"a JSON schema must be a JSON object, got {type(value).__name__}")
        schema = cls(
            json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        )  # key order kept: it orders the answer
        schema.grammar()  # raises on a schema that cannot be enforced
        return schema

    @property
    def value(self) -> dict[str, Any]:
        return json.loads(self.text)

    def grammar(self) -> str:
        """The llguidance grammar of this schema (compiled once per schema text).

        Raises:
            InputError: the compiler refuses the schema (its message says which keyword).
        """
        return _grammar(self.text)

    def parse(self, text: str, *, complete: bool) -> Any:
        """The answer's JSON value.

        Args:
            text: the decoded answer.
            complete: whether the grammar reached its end (eos under the grammar, or nothing more
                could follow); an incomplete answer is an error even if it happens to parse.

        Raises:
            AnswerSchemaError: incomplete or not JSON, or a number no 64-bit float holds (``1E400``) or an
                integer past 64 bits, with the reason and the start of the text.
        """
        shown = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
        if not complete:
            raise AnswerSchemaError(
                f"the answer stopped before its JSON value was complete (raise --max-new-tokens or simplify the "
                f"schema): {shown!r}"
            )
        try:
            return json.loads(text, parse_float=_float, parse_int=_int)
        except _NumberOutOfRange as exc:
            raise AnswerSchemaError(
                f'the answer holds a number {exc} (bound it with "minimum"/"maximum" in the schema): {shown!r}'
            ) from None
        except ValueError as exc:
            raise AnswerSchemaError(f"the answer is not valid JSON ({exc}): {shown!r}") from None


class _NumberOutOfRange(ValueError):
    """A number the grammar allows but a parsed answer cannot hold (it would be written as null, or not at all)."""


def _shown_number(text: str) -> str:
    return text if len(text) <= _SHOWN_NUMBER_CHARS else text[:_SHOWN_NUMBER_CHARS] + "..."


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberOutOfRange(f"that is not finite as a 64-bit float ({_shown_number(text)})")
    return value


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        value = None
    if value is None or not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        raise _NumberOutOfRange(f"outside the 64-bit integer range ({_shown_number(text)})")
    return value


@lru_cache(maxsize=256)
def _grammar(text: str) -> str:
    from llguidance import LLMatcher  # a native library: loaded when a schema is first compiled

    try:
        grammar = LLMatcher.grammar_from_json_schema(close_objects(json.loads(text)), defaults=JSON_OPTIONS)
    except ValueError as exc:
        raise InputError(f"invalid JSON schema: {exc}") from None
    problem = LLMatcher.validate_grammar(grammar)
    if problem:
        raise InputError(f"JSON schema cannot be enforced: {problem}")
    return grammar


__all__ = ["AnswerSchema", "AnswerSchemaError", "JSON_OPTIONS"]
