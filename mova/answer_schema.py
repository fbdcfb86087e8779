"""JSON-schema answers: the schema an answer must meet, its grammar, and the parsed answer.

The grammar comes from llguidance's JSON-schema compiler, strict: a keyword it cannot enforce
(``uniqueItems``, ``not``, ...) is refused up front rather than ignored, so an answer that completes
under the grammar meets the schema. No torch here: the CLI checks schemas before any model loads.
"""

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import InputError

# Compact JSON with the separators of ``json.dumps``: one way to write each value, so the model
# cannot spend its tokens on whitespace.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_SHOWN_CHARS = 200  # how much of a failed answer an error message quotes


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
            AnswerSchemaError: incomplete or not JSON, with the reason and the start of the text.
        """
        shown = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
        if not complete:
            raise AnswerSchemaError(
                f"the answer stopped before its JSON value was complete (raise --max-new-tokens or simplify the "
                f"schema): {shown!r}"
            )
        try:
            return json.loads(text)
        except ValueError as exc:
            raise AnswerSchemaError(f"the answer is not valid JSON ({exc}): {shown!r}") from None


@lru_cache(maxsize=256)
def _grammar(text: str) -> str:
    from llguidance import LLMatcher  # a native library: loaded when a schema is first compiled

    try:
        grammar = LLMatcher.grammar_from_json_schema(text, defaults=JSON_OPTIONS)
    except ValueError as exc:
        raise InputError(f"invalid JSON schema: {exc}") from None
    problem = LLMatcher.validate_grammar(grammar)
    if problem:
        raise InputError(f"JSON schema cannot be enforced: {problem}")
    return grammar


__all__ = ["AnswerSchema", "AnswerSchemaError", "JSON_OPTIONS"]
