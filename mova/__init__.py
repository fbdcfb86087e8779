"""mova: MoVA (mixture of vision experts, arXiv 2404.13046) inference that loads the released checkpoint.

The public names are loaded on first use (PEP 562), so ``import mova`` itself is instant and pulls in
neither torch nor transformers (nor, through them, tqdm).
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AnswerSchema": "answer_schema",
    "AnswerSchemaError": "answer_schema",
    "AdapterConfig": "config",
    "MoVAConfig": "config",
    "RoutingConfig": "config",
    "Engine": "engine",
    "EngineStats": "engine",
    "ErrorInfo": "requests",
    "GenerationConfig": "requests",
    "Request": "requests",
    "Result": "requests",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "InputError": "errors",
    "MoVAError": "errors",
    "RoutingError": "errors",
    "UnknownExpertError": "errors",
    "EXPERTS": "experts",
    "MoVAModel": "modeling",
    "parameter_table": "parameters",
    "DEFAULT_MODEL": "constants",
    "TINY_RANDOM": "constants",
    "FetchedCheckpoint": "pretrained",
    "LoadedModel": "pretrained",
    "build_random": "pretrained",
    "convert_checkpoint": "pretrained",
    "fetch_checkpoint": "pretrained",
    "load_model": "pretrained",
    "save_tiny_checkpoint": "pretrained",
    "MoVAProcessor": "processing",
    "ask": "batch.runner",
    "RoutingDecision": "routing",
    "set_vision_attention": "vision_attention",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mova' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [*sorted(_EXPORTS), "__version__"]
