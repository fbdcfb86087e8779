"""Chat templates: a question in, the LLM prompt text (with the ``<image>`` placeholder) out.

This corresponds to ``conv_mova_llama3`` in upstream MoVA's ``mova/conversation.py`` (LLaVA's "MPT"
separator style). Text only: tokenization happens in :mod:`mova.tokenization`.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from .constants import IMAGE_TOKEN
from .errors import ConfigError, InputError


@dataclass(frozen=True)
class ConversationTemplate:
    """A chat template in "MPT" separator style.

    The prompt is ``system + sep``, then ``role + message + sep`` for every turn with a message; a turn
    whose message is ``None`` contributes only its role header (the open assistant turn at the end).

    Attributes:
        name: registry key (``MoVAConfig.conv_template``).
        system_header: the system block's header, including any leading BOS text.
        system_message: the default system text, which a user's system prompt replaces.
        roles: role key (``"user"``, ``"assistant"``) -> role header text.
        sep: the text closing every finished block.
    """

    name: str
    system_header: str
    system_message: str
    roles: dict[str, str]
    sep: str

    @property
    def system(self) -> str:
        """The default system block (header and text)."""
        return self.system_header + self.system_message

    def render(self, messages: Sequence[tuple[str, str | None]], *, system: str | None = None) -> str:
        """Join ``(role, message)`` turns into the prompt text.

        Args:
            messages: ``(role, message)`` turns; ``None`` leaves a turn open.
            system: the system text in place of ``system_message`` (None: the template's own).

        Raises:
            ConfigError: a role is not one of this template's roles.
        """
        parts = [self.system_header, self.system_message if system is None else system, self.sep]
        for role, message in messages:
            if role not in self.roles:
                raise ConfigError(f"template {self.name!r} has no role {role!r}; known: {', '.join(self.roles)}")
            parts.append(self.roles[role])
            if message is not None:
                parts.extend((message, self.sep))
        return "".join(parts)


# Source: conv_mova_llama3 in upstream mova/conversation.py.
MOVA_LLAMA3 = ConversationTemplate(
    name="mova_llama3",
    # NOTE: the template text itself starts with <|begin_of_text|>, and the Llama-3 tokenizer adds
    # another one; upstream feeds both (double BOS, docs/reference.md), so it stays in the text.
    system_header="<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n",
    system_message=(
        "You are a helpful language and vision assistant. You are able to understand the visual content that "
        "the user provides, and assist the user with a variety of tasks using natural language."
    ),
    roles={
        "user": "<|start_header_id|>user<|end_header_id|>\n\n",
        "assistant": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    },
    sep="<|eot_id|>",
)

TEMPLATES: dict[str, ConversationTemplate] = {MOVA_LLAMA3.name: MOVA_LLAMA3}


def get_template(name: str) -> ConversationTemplate:
    """The template registered under ``name``.

    Raises:
        ConfigError: ``name`` is not a known template.
    """
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(f"unknown conversation template {name!r}; known: {', '.join(TEMPLATES)}") from None


def build_prompt(question: str, template: str = "mova_llama3", *, system: str | None = None) -> str:
    """The single-turn prompt for ``question`` about one image, ready for the assistant to answer.

    The user message is ``"<image>\\n" + question`` (upstream ``mm_use_im_start_end=False``); the
    question is used exactly as given, benchmark suffixes included.

    Args:
        question: the user's question (for the routing pass: ``ROUTING_PROMPT + question``).
        template: a key of :data:`TEMPLATES`.
        system: the system text in place of the template's (None: the template's, byte for byte).

    Returns:
        The prompt text with exactly one ``<image>`` placeholder.

    Raises:
        InputError: the question itself contains the ``<image>`` placeholder.
        ConfigError: unknown template.
    """
    if IMAGE_TOKEN in question:
        raise InputError(
            f"the question contains {IMAGE_TOKEN!r}, which would add a second image placeholder; "
            "remove it (the prompt adds the one placeholder itself)"
        )
    if system is not None and IMAGE_TOKEN in system:
        raise InputError(f"the system prompt contains {IMAGE_TOKEN!r}; a prompt holds one image placeholder only")
    conversation = get_template(template)
    return conversation.render([("user", f"{IMAGE_TOKEN}\n{question}"), ("assistant", None)], system=system)


__all__ = ["ConversationTemplate", "MOVA_LLAMA3", "TEMPLATES", "build_prompt", "get_template"]
