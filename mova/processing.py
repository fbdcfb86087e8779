"""MoVAProcessor: pages and questions -> the tensors and token ids the model takes.

Each preprocess key (``clip`` for the base encoder, one per distinct expert input) is computed at
most once per image, and only for the experts that will run. The inputs come from the configs, as data
(``mova.image_inputs``): no encoder's code is loaded here.
"""

from collections.abc import Callable, Iterable, Sequence
from functools import partial

import torch
from PIL import Image

from .config import MoVAConfig
from .constants import IMAGE_TOKEN_INDEX
from .conversation import build_prompt
from .errors import InputError
from .experts import BASE_PREPROCESS_KEY, get_expert
from .image_inputs import base_input
from .image_ops import to_rgb
from .routing import build_routing_question
from .tokenization import bert_text, decode_generated, tokenize_with_image


class MoVAProcessor:
    """Turns images and questions into model inputs for one config and its two tokenizers."""

    def __init__(self, config: MoVAConfig, tokenizer, text_tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.text_tokenizer = text_tokenizer
        pad = config.image_aspect_ratio == "pad"
        self._preprocessors: dict[str, Callable[[Image.Image], torch.Tensor]] = {
            BASE_PREPROCESS_KEY: partial(base_input(config.base_encoder), pad_to_square=pad)
        }
        self.expert_keys: dict[str, str] = {}
        for name in config.enabled_experts:
            key = get_expert(name).preprocess_key
            self.expert_keys[name] = key
            if key not in self._preprocessors:  # the first expert of a key makes the shared tensor
                self._preprocessors[key] = partial(config.expert_config(name).image_input(), pad_to_square=pad)
        eos = tokenizer.convert_tokens_to_ids(config.eos_token)
        if eos is None or eos == tokenizer.unk_token_id:
            raise InputError(f"tokenizer has no {config.eos_token!r} token")
        self.eos_token_id: int = eos

    # --- images ----------------------------------------------------------------------------------------
    def preprocess(self, image: Image.Image, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """One RGB page -> {key: float32 tensor without batch dim} for each requested key."""
        image = to_rgb(image)
        return {key: self._preprocessors[key](image) for key in keys}

    # --- text ------------------------------------------------------------------------------------------
    def answer_ids(self, question: str, *, system: str | None = None) -> list[int]:
        """The answer prompt's ids; ``system`` replaces the template's system text (None keeps it)."""
        prompt = build_prompt(question, self.config.conv_template, system=system)
        return tokenize_with_image(prompt, self.tokenizer, IMAGE_TOKEN_INDEX)

    def routing_ids(self, question: str) -> list[int]:
        """The routing prompt's ids. NOTE: always the template's own system text, as upstream routes (the
        router was trained on that prompt); a user's system prompt only reaches the answer pass."""
        routed = build_routing_question(question, self.config.enabled_experts)
        return tokenize_with_image(build_prompt(routed, self.config.conv_template), self.tokenizer, IMAGE_TOKEN_INDEX)

    def text_inputs(self, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT input ids and attention mask (B, T) for the question encoder."""
        encoded = self.text_tokenizer(
            [bert_text(q) for q in questions],
            padding="longest",
            truncation=True,
            max_length=self.config.adapter.text_max_length,
            return_tensors="pt",
        )
        return encoded["input_ids"], encoded["attention_mask"]

    def decode(self, token_ids: Sequence[int]) -> str:
        """Generated ids -> answer or routing text, written as the reference writes it."""
        return decode_generated(self.tokenizer, token_ids)


__all__ = ["MoVAProcessor"]
