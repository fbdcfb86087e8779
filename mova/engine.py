"""Batched two-pass MoVA inference: requests in, results out, exact at any batch size.

Data flow per batch (see STYLE.md, "Batching engine"): base CLIP features (cached per image), the
routing pass, experts run sparsely on the sub-batch that chose them (cached per image), the
MoV-Adapter with per-item routing masks, the answer pass.
"""

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .answer_schema import AnswerSchema
from .batch_sizing import AUTO, auto_batch_size
from .device_map import execution_device
from .errors import ConfigError, InputError, MoVAError
from .experts import BASE_PREPROCESS_KEY
from .language_model import generate, splice_image_features
from .pretrained import LoadedModel
from .requests import ErrorInfo, GenerationConfig, Request, Result
from .routing import RoutingDecision, force_routing, parse_routing_answer
from .sampling import row_seed
from .schema_mask import SchemaTokenizer

logger = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """Work actually done, counted (tests assert on it; benchmarks print it)."""

    base_images: int = 0  # pages encoded by the base CLIP encoder
    text_encodings: int = 0  # questions encoded by BERT
    routing_items: int = 0  # requests that went through the routing pass
    plain_images: int = 0  # pages whose no-expert adapter output was computed (routing pass, "none" answers)
    expert_images: dict[str, int] = field(default_factory=dict)  # pages each expert ran on
    answer_items: int = 0


@dataclass
class _Page:
    """Everything computed for one page (image_key), reused by every prompt on it."""

    image: Image.Image | None = None
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # preprocessed, by key; dropped after a batch
    base: torch.Tensor | None = None  # (N, C)
    experts: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N, C_e), aligned
    plain_tokens: torch.Tensor | None = None  # (num_tokens, W): the adapter's output with no expert


@dataclass
class _Item:
    request: Request
    result: Result
    decision: RoutingDecision | None = None

    def fail(self, stage: str, exc: BaseException) -> None:
        self.result.error = ErrorInfo(stage=stage, type=type(exc).__name__, message=str(exc) or repr(exc))


class _LRU(OrderedDict):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get_or_create(self, key: str, factory: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = factory()
        while len(self) > self.capacity:
            self.popitem(last=False)
        return value


class Engine:
    """Streams results for requests, batching every stage and reusing features across prompts.

    Args:
        loaded: the model and processor (``mova.load_model``).
        batch_size: requests per batch (every stage; experts run on the sub-batch that chose them), or
            ``"auto"``: sized from the accelerator's free memory (``mova.batch_sizing``). Either way, a
            stage that runs out of memory is split in halves and later batches are no larger.
        cache_pages: pages whose features stay cached (on the model's device) for later prompts.
        cache_questions: question features (BERT) kept for reuse.
        group_window: route this many batches ahead, then run the experts and the answer pass on
            batches regrouped by the experts chosen (and page), so each expert sees larger sub-batches
            and each answer batch fewer adapter branches. 1 (the default, until measured on a GPU):
            every batch runs alone, in request order. Results come in request order either way.
        static_cache: decode into static KV caches, compiled on CUDA (``language_model.generate``);
            off by default until measured on a GPU.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        batch_size: int | str = 8,
        cache_pages: int = 32,
        cache_questions: int = 256,
        group_window: int = 1,
        static_cache: bool = False,
    ):
        self.model = loaded.model
        self.processor = loaded.processor
        self.config = loaded.model.config
        # where each preprocessed input is consumed (the first expert of a shared key decides)
        self._input_devices = {BASE_PREPROCESS_KEY: execution_device(self.model.base_encoder)}
        for name in self.config.enabled_experts:
            key = self.processor.expert_keys[name]
            self._input_devices.setdefault(key, execution_device(self.model.experts[name]))
        if batch_size == AUTO:
            batch_size = auto_batch_size(self.config, device=self.model.device, dtype=self.model.dtype)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1 or {AUTO!r}, got {batch_size!r}")
        if not isinstance(group_window, int) or group_window < 1:
            raise ConfigError(f"group_window must be an integer >= 1, got {group_window!r}")
        self.batch_size = batch_size
        self.group_window = group_window
        self.static_cache = static_cache
        self.stats = EngineStats()
        # a window's pages and questions stay cached from its routing to its answers
        self._pages: _LRU = _LRU(max(cache_pages, batch_size * group_window))
        self._questions: _LRU = _LRU(max(cache_questions, batch_size * group_window))
        self._schema_tokenizer = None  # made on the first request with a schema

    # --- public ----------------------------------------------------------------------------------------
    def preprocess(self, image: Image.Image, *, experts: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """The inputs of one page to compute ahead (``Request.pixel_values``, e.g. in the CLI's prefetch
        threads): the base encoder's, and those of ``experts`` when they are known before routing
        (forced). Page-locked where they will be used on CUDA, so the engine's copy does not block (``_read``).
        """
        known = self.processor.expert_keys  # an unknown name is reported by the routing stage, not here
        keys = [BASE_PREPROCESS_KEY, *(known[name] for name in experts if name in known)]
        inputs = self.processor.preprocess(image, list(dict.fromkeys(keys)))
        return {
            key: value.pin_memory() if self._input_devices[key].type == "cuda" else value
            for key, value in inputs.items()
        }

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        """Results in request order, one window (``group_window`` batches) at a time, streamed as each
        window finishes."""
        window: list[Request] = []
        for request in requests:
            window.append(request)
            if len(window) >= self.batch_size * self.group_window:  # the size may shrink (out of memory)
                yield from self._run_window(window)
                window = []
        if window:
            yield from self._run_window(window)

    # --- batch pipeline --------------------------------------------------------------------------------
    def _run_window(self, requests: list[Request]) -> list[Result]:
        items = [_Item(request, Result(tag=request.tag)) for request in requests]
        for start in range(0, len(items), self.batch_size):
            self._route_batch(items[start : start + self.batch_size])
        to_answer = [item for item in self._live(items) if not item.request.route_only]
        if self.group_window > 1:
            # NOTE: stable, so equal keys keep request order; tokens do not depend on the batch (float32)
            to_answer.sort(key=lambda item: (item.decision.experts, item.request.image_key))
        start = 0
        while start < len(to_answer):
            size = self.batch_size  # read per batch: an out-of-memory error may have shrunk it
            self._answer_batch(to_answer[start : start + size])
            start += size
        for item in items:
            page = self._pages.get(item.request.image_key)
            if page is not None:
                page.inputs.clear()  # preprocessed pixels are cheap to redo and large to keep
        return [item.result for item in items]

    def _route_batch(self, items: list[_Item]) -> None:
        """Read, encode and route one batch (or take the forced choice)."""
        enabled = self.config.enabled_experts
        self._stage("read", items, self._read)
        self._stage("encode", items, self._encode_base)
        self._stage("encode", items, self._encode_questions)
        to_route = []
        for item in self._live(items):
            if item.request.experts is None and self.config.routing.enabled:
                to_route.append(item)
            else:
                try:
                    item.decision = force_routing(item.request.experts or (), enabled)
                except MoVAError as exc:
                    item.fail("route", exc)
        self._stage("route", to_route, self._route)
        for item in self._live(items):
            item.result.routing = item.decision

    def _answer_batch(self, items: list[_Item]) -> None:
        """Run the chosen experts on one batch of routed items, then its answer pass."""
        self._stage("experts", items, self._encode_experts)
        groups: dict[GenerationConfig, list[_Item]] = {}
        for item in self._live(items):
            groups.setdefault(item.request.generation, []).append(item)
        for group in groups.values():
            self._stage("answer", group, self._answer)

    @staticmethod
    def _live(items: list[_Item]) -> list[_Item]:
        return [item for item in items if item.result.error is None]

    def _stage(self, stage: str, items: list[_Item], fn: Callable[[list[_Item]], None]) -> None:
        """Run ``fn`` on the live items; on failure split the batch until the failing items are alone.

        This isolates a bad item from its batch and is also the out-of-memory back-off (halving).
        """
        items = self._live(items)
        if not items:
            return
        start = time.perf_counter()
        try:
            fn(items)
        except Exception as exc:  # NOTE: deliberate: any failure is isolated and reported per item
            if isinstance(exc, torch.cuda.OutOfMemoryError):  # = torch.OutOfMemoryError (torch >= 2.5)
                torch.cuda.empty_cache()
                self._shrink(len(items))
            if len(items) == 1:
                logger.debug("%s failed for one item", stage, exc_info=True)
                items[0].fail(stage, exc)
                return
            half = len(items) // 2
            self._stage(stage, items[:half], fn)
            self._stage(stage, items[half:], fn)
            return
        elapsed = (time.perf_counter() - start) * 1000
        for item in items:
            item.result.timings_ms[stage] = item.result.timings_ms.get(stage, 0.0) + elapsed

    def _shrink(self, failed: int) -> None:
        """After ``failed`` items ran out of memory together, later batches hold at most half as many."""
        smaller = max(1, failed // 2)
        if smaller < self.batch_size:
            logger.warning("out of memory with %d items: batch size %d -> %d", failed, self.batch_size, smaller)
            self.batch_size = smaller

    def _page(self, item: _Item) -> _Page:
        return self._pages.get_or_create(item.request.image_key, _Page)

    def _inputs(self, page: _Page, keys: list[str]) -> dict[str, torch.Tensor]:
        missing = [key for key in keys if key not in page.inputs]
        if missing:
            if page.image is None:
                raise InputError("the page image is no longer available to preprocess")
            page.inputs.update(self.processor.preprocess(page.image, missing))
        return {key: page.inputs[key] for key in keys}

    # --- stages ------------------------------------------------------------------------------------------
    def _read(self, items: list[_Item]) -> None:
        for item in items:
            page = self._page(item)
            for key, value in item.request.pixel_values.items():
                # pinned inputs (``preprocess``) start their copy now, without waiting for it
                device = self._input_devices.get(key)
                page.inputs[key] = value.to(device, non_blocking=True) if device and value.is_pinned() else value
            if page.image is None:
                image = item.request.image
                page.image = image() if callable(image) else image

    def _encode_base(self, items: list[_Item]) -> None:
        pages = self._unique_pages(item for item in items if self._page(item).base is None)
        if not pages:
            return
        pixels = torch.stack([self._inputs(page, [BASE_PREPROCESS_KEY])[BASE_PREPROCESS_KEY] for page in pages])
        features = self.model.encode_base(pixels)
        for page, row in zip(pages, features, strict=True):
            page.base = row
        self.stats.base_images += len(pages)

    def _encode_questions(self, items: list[_Item]) -> None:
        questions = list(dict.fromkeys(i.request.prompt for i in items if i.request.prompt not in self._questions))
        if not questions:
            return
        input_ids, attention_mask = self.processor.text_inputs(questions)
        features = self.model.encode_text(input_ids, attention_mask)
        for question, row in zip(questions, features, strict=True):
            self._questions.get_or_create(question, lambda row=row: row)
        self.stats.text_encodings += len(questions)

    def _unique_pages(self, items: Iterable[_Item]) -> list[_Page]:
        pages: dict[str, _Page] = {}
        for item in items:
            pages.setdefault(item.request.image_key, self._page(item))
        return list(pages.values())

    def _base_and_text(self, items: list[_Item]) -> tuple[torch.Tensor, torch.Tensor]:
        base = torch.stack([self._page(item).base for item in items])
        text = torch.stack([self._questions.get_or_create(item.request.prompt, _missing) for item in items])
        return base, text

    def _plain_tokens(self, items: list[_Item]) -> None:
        """Make sure each item's page has its adapter output with no expert (once per page).

        NOTE: with every expert off, the adapter never uses the question (the gate's output is scaled
        by 0), so this output depends on the page only. The routing pass uses it pooled; an answer
        with no expert routed uses it as is (docs/reference.md, The two passes).
        """
        pending = [item for item in items if self._page(item).plain_tokens is None]
        pages = self._unique_pages(pending)
        if not pages:
            return
        first: dict[str, _Item] = {}
        for item in pending:
            first.setdefault(item.request.image_key, item)  # same order as pages
        base, text = self._base_and_text(list(first.values()))
        mask = torch.zeros(len(pages), len(self.config.enabled_experts))
        tokens = self.model.fuse(base, {}, mask, text).image_features
        for page, row in zip(pages, tokens, strict=True):
            page.plain_tokens = row
        self.stats.plain_images += len(pages)

    def _route(self, items: list[_Item]) -> None:
        # The prompts on one page share their leading positions (system text, image, routing
        # instructions), which the LLM runs once per page; each question continues from that cache.
        self._plain_tokens(items)
        routing_tokens = self.model.pool_for_routing(torch.stack([self._page(item).plain_tokens for item in items]))
        prompt = splice_image_features(
            self.model.language_model,
            [self.processor.routing_ids(i.request.prompt) for i in items],
            routing_tokens,
            prefix_groups=[i.request.image_key for i in items],
        )
        outputs = generate(
            self.model.language_model,
            prompt,
            eos_token_id=self.processor.eos_token_id,
            max_new_tokens=self.config.routing.max_new_tokens,
            static_cache=self.static_cache,
        )
        for item, tokens_out in zip(items, outputs, strict=True):
            text_out = self.processor.decode(tokens_out)
            item.decision = parse_routing_answer(text_out, self.config.enabled_experts)
            item.result.router_tokens = len(tokens_out)
        self.stats.routing_items += len(items)

    def _encode_experts(self, items: list[_Item]) -> None:
        for name in self.config.enabled_experts:
            chosen = [item for item in items if name in item.decision.experts]
            pages = self._unique_pages(item for item in chosen if name not in self._page(item).experts)
            if not pages:
                continue
            key = self.processor.expert_keys[name]
            pixels = torch.stack([self._inputs(page, [key])[key] for page in pages])
            features = self.model.encode_expert(name, pixels)
            for page, row in zip(pages, features, strict=True):
                page.experts[name] = row
            self.stats.expert_images[name] = self.stats.expert_images.get(name, 0) + len(pages)

    def _answer(self, items: list[_Item]) -> None:
        enabled = self.config.enabled_experts
        routed = [item for item in items if item.decision.experts]
        self._plain_tokens([item for item in items if not item.decision.experts])
        image_features: list[torch.Tensor | None] = [
            None if item.decision.experts else self._page(item).plain_tokens for item in items
        ]
        gates = torch.zeros(len(items), self.config.adapter.num_layers, len(enabled))  # no expert: all zero
        if routed:
            base, text = self._base_and_text(routed)
            mask = torch.tensor([[float(name in item.decision.experts) for name in enabled] for item in routed])
            expert_features = {}
            for name in enabled:
                rows = [self._page(item).experts[name] for item in routed if name in item.decision.experts]
                if rows:
                    expert_features[name] = torch.stack(rows)
            fused = self.model.fuse(base, expert_features, mask, text)
            positions = [index for index, item in enumerate(items) if item.decision.experts]
            for position, row, gate in zip(
                positions, fused.image_features, torch.stack(fused.gate_weights, dim=1).cpu(), strict=True
            ):
                image_features[position] = row
                gates[position] = gate
        # Shared leading positions run through the LLM once: the prompts with no expert on one page
        # share their image tokens too (and the system text before them); the others share the
        # system text.
        plain_pages = Counter(item.request.image_key for item in items if not item.decision.experts)
        prompt = splice_image_features(
            self.model.language_model,
            [self.processor.answer_ids(i.request.prompt, system=i.request.system) for i in items],
            torch.stack(image_features),
            prefix_groups=[
                ("page", item.request.image_key)
                if not item.decision.experts and plain_pages[item.request.image_key] > 1
                else ("text",)
                for item in items
            ],
        )
        options = items[0].request.generation
        schemas = [item.request.schema for item in items]
        mask = self._schema_mask(schemas) if any(schemas) else None
        outputs = generate(
            self.model.language_model,
            prompt,
            eos_token_id=self.processor.eos_token_id,
            max_new_tokens=options.max_new_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            row_seeds=[row_seed(options.seed, item.request.image_key, item.request.prompt) for item in items],
            token_mask=mask,
            static_cache=self.static_cache,
        )
        complete = mask.complete(outputs) if mask is not None else {}
        for row, (item, length, tokens_out, gate) in enumerate(zip(items, prompt.lengths, outputs, gates, strict=True)):
            item.result.answer = self.processor.decode(tokens_out)
            item.result.gate_weights = gate.tolist()
            item.result.prompt_tokens = length
            item.result.answer_tokens = len(tokens_out)
            if item.request.schema is not None:
                try:
                    item.result.answer_json = item.request.schema.parse(item.result.answer, complete=complete[row])
                except MoVAError as exc:
                    item.fail("answer", exc)
        self.stats.answer_items += len(items)

    def _schema_mask(self, schemas: list[AnswerSchema | None]) -> Any:
        if self._schema_tokenizer is None:
            self._schema_tokenizer = SchemaTokenizer(
                self.processor.tokenizer,
                eos_token_id=self.processor.eos_token_id,
                vocab_size=self.model.language_model.config.vocab_size,
            )
        return self._schema_tokenizer.mask(schemas)


def _missing() -> torch.Tensor:
    raise InputError("question features were evicted before use; raise cache_questions above the batch size")


__all__ = ["Engine", "EngineStats", "ErrorInfo", "GenerationConfig", "Request", "Result"]
