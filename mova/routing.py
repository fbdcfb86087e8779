"""Routing text: the router prompt shown to the LLM, and the parser of its answer.

This corresponds to ``ROUTING_PROMPT`` in upstream MoVA's ``mova/constants.py`` and to the mask parsing
in its ``mova/eval/model_vqa_loader.py``. The prompt lists the enabled experts with letters A, B, ...
in registry order, each with its ``routing_description``; for the 7 released experts it equals the
upstream string byte for byte. Pure string functions over the expert registry (which needs no torch).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ConfigError, UnknownExpertError
from .experts import EXPERTS

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# NOTE: "select the most 3 suitable models" is upstream's wording; the router was trained on it.
ROUTING_INSTRUCTION = (
    "You are a helpful assistant router. Based on the visual content, questions, and model pool the user "
    "provides, you need to consider the expertise of these models to select the most 3 suitable models to help "
    "you answer the questions. Answer with the model's letter from the given choices directly. If no models are "
    "selected, just answer 'none'."
)

# NOTE: upstream keeps only the first three comma-separated items of the router's answer.
MAX_ROUTING_ITEMS = 3


@dataclass(frozen=True)
class RoutingDecision:
    """Which experts one request uses.

    Attributes:
        experts: the chosen expert names, in registry order (empty: no expert).
        letters: their router letters, in the same order.
        raw_text: the router's decoded answer ("" when the choice was forced).
        forced: True when the choice came from the user (``--experts``), not from the router.
    """

    experts: tuple[str, ...]
    letters: tuple[str, ...]
    raw_text: str
    forced: bool = False


def _resolve(experts: Sequence[str]) -> list[str]:
    """The enabled experts validated and put in registry order (the order that fixes their letters)."""
    unknown = [name for name in experts if name not in EXPERTS]
    if unknown:
        raise UnknownExpertError(f"unknown expert {unknown[0]!r}; known: {', '.join(EXPERTS)}")
    if len(set(experts)) != len(experts):
        raise ConfigError(f"expert list has duplicates: {', '.join(experts)}")
    if len(experts) > len(LETTERS):
        raise ConfigError(f"the router prompt has letters for {len(LETTERS)} experts, got {len(experts)}")
    return [name for name in EXPERTS if name in experts]


def format_routing_prompt(descriptions: Sequence[str]) -> str:
    """The router prompt for experts with these descriptions, lettered A, B, ... in the given order.

    Args:
        descriptions: one ``routing_description`` per enabled expert, in registry order.

    Returns:
        The instruction, the lettered model pool and the ``Question:`` header; the question follows it.
    """
    if len(descriptions) > len(LETTERS):
        raise ConfigError(f"the router prompt has letters for {len(LETTERS)} experts, got {len(descriptions)}")
    pool = "".join(f"{letter}. {text}\n" for letter, text in zip(LETTERS, descriptions, strict=False))
    return f"{ROUTING_INSTRUCTION}\nModel pool:\n{pool}\nQuestion:\n"


def build_routing_prompt(experts: Sequence[str]) -> str:
    """The router prompt for the enabled experts (their registry ``routing_description`` sentences).

    Raises:
        UnknownExpertError: a name is not in the registry.
        ConfigError: duplicate names, or more experts than letters.
    """
    return format_routing_prompt([EXPERTS[name].routing_description for name in _resolve(experts)])


def build_routing_question(question: str, experts: Sequence[str]) -> str:
    """The routing-pass question: the router prompt followed by the user's question.

    The result takes the place of the question in the chat template (the answer pass uses the plain
    question). BERT always sees the plain question, in both passes.
    """
    return build_routing_prompt(experts) + question


def parse_routing_answer(text: str, experts: Sequence[str]) -> RoutingDecision:
    """Turn the router's answer into the chosen experts, exactly as upstream does.

    Only the first three comma-separated items are kept; then an expert is chosen iff its uppercase
    letter occurs anywhere in that text.

    Args:
        text: the decoded routing-pass output.
        experts: the enabled experts (the ones listed in the router prompt).

    Returns:
        The decision; ``experts`` is empty for "none", "" or an answer without any known letter.
    """
    # NOTE: upstream's parser is a case-sensitive substring test, not a token parse: "Answer: B"
    # chooses A and B (the "A" of "Answer"), "All of them" chooses A, a lowercase "b" chooses nothing,
    # and "A, B, C, D" keeps only A, B, C (but "ABCD" keeps all four). Kept for parity.
    kept = ",".join(text.split(",")[:MAX_ROUTING_ITEMS])
    chosen = [(name, letter) for name, letter in zip(_resolve(experts), LETTERS, strict=False) if letter in kept]
    return RoutingDecision(
        experts=tuple(name for name, _ in chosen),
        letters=tuple(letter for _, letter in chosen),
        raw_text=text,
    )


def force_routing(chosen: Sequence[str], experts: Sequence[str]) -> RoutingDecision:
    """A decision made by the user instead of the router (``--experts a,b``).

    Args:
        chosen: the experts to use; each must be enabled.
        experts: the enabled experts (they fix the letters).

    Raises:
        ConfigError: a chosen expert is not enabled.
        UnknownExpertError: a name is not in the registry.
    """
    enabled = _resolve(experts)
    disabled = [name for name in _resolve(chosen) if name not in enabled]
    if disabled:
        raise ConfigError(f"expert {disabled[0]!r} is not enabled in this model; enabled: {', '.join(enabled)}")
    pairs = [(name, letter) for name, letter in zip(enabled, LETTERS, strict=False) if name in chosen]
    return RoutingDecision(
        experts=tuple(name for name, _ in pairs),
        letters=tuple(letter for _, letter in pairs),
        raw_text="",
        forced=True,
    )


@dataclass(frozen=True)
class ExpertChoice:
    """What ``--experts`` / ``experts=`` asked for.

    Attributes:
        forced: None lets the router choose (``auto``); a tuple forces exactly those experts: names
            (registry order) then router letters (``A``..), which mean the loaded model's enabled
            experts in their order and so are resolved only once it is loaded; the empty tuple
            (``none``) runs no expert.
    """

    forced: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        """The canonical spelling (``auto``, ``none`` or comma-separated names then letters), used in ids."""
        if self.forced is None:
            return "auto"
        return ",".join(self.forced) if self.forced else "none"

    def resolve(self, enabled: Sequence[str]) -> tuple[str, ...] | None:
        """The forced experts as names, in the order of ``enabled`` (the loaded model's experts).

        Raises:
            UnknownExpertError: a letter beyond the model's experts.
        """
        if self.forced is None:
            return None
        names = [item for item in self.forced if not _is_letter(item)]
        for letter in (item for item in self.forced if _is_letter(item)):
            index = LETTERS.index(letter)
            if index >= len(enabled):
                raise UnknownExpertError(
                    f"no expert has letter {letter!r}; this model's letters: A-{LETTERS[len(enabled) - 1]} "
                    f"({lettered(enabled)})"
                )
            names.append(enabled[index])
        return tuple([name for name in enabled if name in names] + [n for n in names if n not in enabled])


def _is_letter(item: str) -> bool:
    return len(item) == 1 and item in LETTERS


def lettered(names: Sequence[str]) -> str:
    """``A=dinov2, B=vary_sam_b, ...``: names with the router letters they get in this order."""
    return ", ".join(f"{letter}={name}" for letter, name in zip(LETTERS, names, strict=False))


def parse_expert_choice(value: "str | Sequence[str] | ExpertChoice | None") -> ExpertChoice:
    """``auto`` (or None), ``none``, or expert names / router letters (``"A,dinov2"`` or a sequence).

    Args:
        value: what the user wrote; names are the registry's, letters the loaded model's.

    Raises:
        UnknownExpertError: a name that is not an expert, or an empty list.
    """
    if isinstance(value, ExpertChoice):
        return value
    if value is None:
        return ExpertChoice(None)
    items = value.split(",") if isinstance(value, str) else list(value)
    text = ",".join(items).strip().lower()
    if text == "auto":
        return ExpertChoice(None)
    if text == "none":
        return ExpertChoice(())
    known = list(EXPERTS)
    chosen: list[str] = []
    for item in (str(part).strip() for part in items):
        if not item:
            continue
        if _is_letter(item):
            chosen.append(item)  # resolved against the loaded model's experts (ExpertChoice.resolve)
        elif item.lower() in known:
            chosen.append(item.lower())
        else:
            raise UnknownExpertError(
                f"unknown expert {item!r}; use auto, none, or names (or router letters) from: " + lettered(known)
            )
    if not chosen:
        raise UnknownExpertError("empty expert list; use auto, none, or names/letters")
    letters = sorted({item for item in chosen if _is_letter(item)})
    return ExpertChoice(tuple([name for name in known if name in chosen] + letters))


__all__ = [
    "ExpertChoice",
    "LETTERS",
    "ROUTING_INSTRUCTION",
    "RoutingDecision",
    "build_routing_prompt",
    "build_routing_question",
    "force_routing",
    "format_routing_prompt",
    "lettered",
    "parse_expert_choice",
    "parse_routing_answer",
]
