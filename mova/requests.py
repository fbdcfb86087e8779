"""What goes into the engine and what comes out: plain dataclasses, no torch.

They live apart from ``engine.py`` so that the CLI (whose ``--help`` must not import torch) and test
stubs build and read the real types instead of copies.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .routing import RoutingDecision

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .answer_schema import AnswerSchema


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding options of the answer pass (the routing pass is always greedy, upstream's 16 tokens)."""

    max_new_tokens: int = 128  # upstream model_vqa_loader default
    temperature: float = 0.0  # 0 = greedy, as the reference evaluates
    top_p: float | None = None
    seed: int = 0  # with the page and the prompt, fixes each sampled answer (at any batch size)


@dataclass
class Request:
    """One (image, prompt) pair to answer.

    Attributes:
        image_key: content hash of the page; requests with the same key share cached features.
        image: a loader of the RGB page, or the image itself; called at most once per batch.
        prompt: the user's question (the ``<image>`` placeholder is added by the template).
        system: the answer pass's system text in place of the template's (None: the template's);
            the routing pass always uses the template's, as upstream.
        schema: the JSON schema the answer must meet (decoding is constrained to it; the routing pass
            never is); the result then carries the parsed value.
        experts: None = let the router choose; a tuple forces those experts (empty = none).
        route_only: stop after the routing pass.
        pixel_values: preprocessed tensors already computed (by preprocess key), e.g. by workers.
        tag: opaque value handed back on the result (the CLI's job).
    """

    image_key: str
    image: "Image.Image | Callable[[], Image.Image]"
    prompt: str
    system: str | None = None
    schema: "AnswerSchema | None" = None
    experts: tuple[str, ...] | None = None
    route_only: bool = False
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    pixel_values: "dict[str, torch.Tensor]" = field(default_factory=dict)
    tag: Any = None


@dataclass(frozen=True)
class ErrorInfo:
    """Why one request failed, and at which stage (read | preprocess | route | experts | answer)."""

    stage: str
    type: str
    message: str


@dataclass
class Result:
    """What the engine returns for one request (in the order the batch finished)."""

    tag: Any
    routing: RoutingDecision | None = None
    answer: str | None = None
    answer_json: Any = None  # the parsed answer of a request with a schema
    prompt_tokens: int = 0
    router_tokens: int = 0
    answer_tokens: int = 0
    gate_weights: list[list[float]] | None = None  # per adapter block, per enabled expert (answer pass)
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


__all__ = ["ErrorInfo", "GenerationConfig", "Request", "Result", "RoutingDecision"]
