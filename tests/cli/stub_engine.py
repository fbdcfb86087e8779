"""A stand-in for the model behind `mova ask`'s one seam (`mova.batch.answering.open_model`), llm's MockModel idea.

It answers instantly and deterministically from the page's content hash and the prompt, so tests of
CLI logic (records, resume, exit codes, interruption) run without a model. It takes and returns the
library's own ``mova.requests`` types, as ``mova.Engine`` does. `stub_cli.py` runs the real
`mova` command with this stub in a subprocess.
"""

import hashlib
import time
from collections.abc import Iterable, Iterator

from mova.batch import answering as ask_execute
from mova.batch.records import ModelInfo
from mova.config import MoVAConfig
from mova.requests import ErrorInfo, Request, Result, RoutingDecision
from mova.routing import LETTERS

# The stub stands in for the tiny-random model: its enabled experts, in router-letter order.
NAMES = tuple(MoVAConfig.from_name("tiny-random").enabled_experts)


def stub_answer(image_key: str, prompt: str) -> str:
    """The stub's answer: a pure function of what it was asked (tests recompute it)."""
    return "stub " + hashlib.sha256(f"{image_key}|{prompt}".encode()).hexdigest()[:12]


def stub_choice(image_key: str, names: tuple[str, ...] = NAMES) -> tuple[str, ...]:
    """The stub router's choice: two of the model's experts, picked by the page hash."""
    index = int(hashlib.sha256(image_key.encode()).hexdigest(), 16)
    count = len(names)
    return tuple(sorted({names[index % count], names[(index // count) % count]}, key=names.index))


class StubEngine:
    """Streams one result per request, in order, in batches; records what it was given.

    Args:
        batch_size: requests pulled before answering.
        delay: seconds slept per request (for kill tests).
        interrupt_after: raise KeyboardInterrupt after this many results (as Ctrl-C would).
        fail_marker: prompts containing it get an ``answer``-stage error result.
        experts: the stub model's enabled experts, in router-letter order.
    """

    def __init__(
        self,
        *,
        batch_size: int = 2,
        delay: float = 0.0,
        interrupt_after: int | None = None,
        fail_marker: str = "FAIL",
        experts: tuple[str, ...] = NAMES,
    ) -> None:
        self.experts = experts
        self.batch_size = batch_size
        self.delay = delay
        self.interrupt_after = interrupt_after
        self.fail_marker = fail_marker
        self.requests: list[Request] = []
        self.served = 0

    def _answer(self, request: Request) -> Result:
        if self.delay:
            time.sleep(self.delay)
        assert request.image.size[0] > 0  # a decoded page reached the engine
        if self.fail_marker in request.prompt:
            return Result(tag=request.tag, error=ErrorInfo("answer", "RuntimeError", "stub failure"))
        if request.experts is None:
            chosen, raw, forced = stub_choice(request.image_key, self.experts), None, False
        else:
            chosen, raw, forced = request.experts, "", True
        letters = tuple(LETTERS[self.experts.index(name)] for name in chosen)
        decision = RoutingDecision(chosen, letters, raw if raw is not None else ", ".join(letters), forced)
        answer = None if request.route_only else stub_answer(request.image_key, request.prompt)
        return Result(
            tag=request.tag,
            routing=decision,
            answer=answer,
            prompt_tokens=10,
            router_tokens=3,
            answer_tokens=0 if answer is None else 2,
            timings_ms={"route": 1.0, "answer": 2.0},
        )

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        batch = []
        for request in requests:
            self.requests.append(request)
            batch.append(request)
            if len(batch) == self.batch_size:
                yield from self._flush(batch)
                batch = []
        yield from self._flush(batch)

    def _flush(self, batch: list[Request]) -> Iterator[Result]:
        for request in batch:
            if self.interrupt_after is not None and self.served >= self.interrupt_after:
                raise KeyboardInterrupt
            self.served += 1
            yield self._answer(request)
        batch.clear()


def stub_opener(engine: StubEngine):
    """A replacement for ``mova.batch.answering.open_model`` (the model seam) that serves ``engine``."""

    def open_model(settings: ask_execute.ModelSettings) -> ask_execute.ModelSession:
        engine.settings = settings
        return ask_execute.ModelSession(
            engine=engine,
            info=ModelInfo(id=settings.model_id, revision=settings.revision, dtype="float32"),
            experts=engine.experts,
        )

    return open_model


def install(monkeypatch, **options) -> StubEngine:
    """Route `mova ask` to a new StubEngine for the rest of the test."""
    engine = StubEngine(**options)
    monkeypatch.setattr(ask_execute, "open_model", stub_opener(engine))
    return engine
