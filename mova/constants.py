"""Constants shared by several files of the library, and by the CLI.

Torch-free on purpose: ``mova_cli`` imports this module for its option choices and defaults, so
``mova --help`` stays fast and no constant is written twice on either side of the line.
"""

import os
from collections.abc import Mapping

IMAGE_TOKEN = "<image>"
# NOTE: upstream marks the image position in input_ids with this id (LLaVA convention).
IMAGE_TOKEN_INDEX = -200

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# --- models -----------------------------------------------------------------------------------------
DEFAULT_MODEL = "zongzhuofan/llama3-mova-8b"  # the released checkpoint on the Hugging Face hub
TINY_RANDOM = "tiny-random"
RANDOM_PRESETS = (TINY_RANDOM, "small-random")  # built in-process with random weights, no files

# --- placement and precision ------------------------------------------------------------------------
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "sequential")  # accelerate's device-map planners
DTYPE_NAMES = ("float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
QUANT_MODES = ("int8", "nf4")  # mova.quantization: bitsandbytes' LLM.int8 and 4-bit NormalFloat

OFFLINE_ENV = "HF_HUB_OFFLINE"


def canonical_dtype(name: str) -> str:
    """``bf16`` -> ``bfloat16``; a name in ``DTYPE_NAMES`` (or anything else) is returned as it is."""
    return DTYPE_ALIASES.get(name, name)


def hub_offline(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the hub (huggingface_hub's truthy spellings)."""
    return environ.get(OFFLINE_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_MODEL",
    "DEVICE_MAP_STRATEGIES",
    "DTYPE_ALIASES",
    "DTYPE_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_TOKEN",
    "IMAGE_TOKEN_INDEX",
    "OFFLINE_ENV",
    "QUANT_MODES",
    "RANDOM_PRESETS",
    "TINY_RANDOM",
    "canonical_dtype",
    "hub_offline",
]

# PDF pages are rendered at this resolution by default.
DEFAULT_DPI = 200
# The largest expert input is 1024 px (the SAM-style experts), so larger renders are wasted work.
DEFAULT_MAX_SIDE = 1024


def auto_dtype(device: str) -> str:
    """``dtype="auto"``: bfloat16 on CUDA (as the reference runs), float32 elsewhere (exact, and CPUs
    have no fast bfloat16 matmul)."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def is_hub_id(spec: str) -> bool:
    """``owner/name`` that names no local path: what ``-m`` takes as a Hugging Face hub id."""
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not os.path.lexists(spec)
