"""``mova inspect MODEL``: what a model is made of, what it weighs, and whether a checkpoint fits it."""

import json
import math
from typing import Any

import click

from mova.config import PRESETS, MoVAConfig
from mova.constants import QUANT_MODES, auto_dtype

from ..options import verbosity_options

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
QUANTIZED_REST_DTYPE = auto_dtype("cuda")  # what the unquantized parts take on a GPU (--dtype auto)
MAX_LISTED_KEYS = 10


def _component(name: str) -> str:
    """The component of a state-dict name in our layout (``experts.<id>`` keeps the expert id)."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "experts" else parts[0]


def _config_summary(config: Any) -> dict[str, Any]:
    text, base, adapter = config.text, config.base_encoder, config.adapter
    return {
        "name": config.name,
        "language_model": {
            key: text.get(key)
            for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "vocab_size")
        },
        "base_encoder": {
            key: base.get(key)
            for key in ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "select_layer")
        },
        "experts": list(config.enabled_experts),
        "adapter": {
            "grid_size": adapter.grid_size,
            "num_layers": adapter.num_layers,
            "image_tokens": adapter.num_tokens,
        },
        "routing": {"enabled": config.routing.enabled, "max_new_tokens": config.routing.max_new_tokens},
        "conv_template": config.conv_template,
    }


def _coverage(path: Any, expected: dict[str, tuple[int, ...]], layout: str) -> dict[str, Any]:
    from mova.checkpoint import iter_tensors, key_coverage

    coverage = key_coverage({name: tensor.shape for name, tensor in iter_tensors(path)}, expected)
    return {
        "layout": layout,
        "expected": coverage.expected,
        "present": coverage.present,
        "missing": len(coverage.missing),
        "unexpected": len(coverage.unexpected),
        "shape_mismatches": len(coverage.mismatched),
        "first_missing": coverage.missing[:MAX_LISTED_KEYS],
        "first_unexpected": coverage.unexpected[:MAX_LISTED_KEYS],
        "first_shape_mismatches": coverage.mismatched[:MAX_LISTED_KEYS],
    }


def _quantized(config: Any, mode: str, dtype: str) -> dict[str, Any]:
    """Weight memory with ``--quantize mode`` (the rest in ``dtype``), from a meta-device build."""
    import torch

    from mova.modeling import MoVAModel
    from mova.quantization import weight_bytes

    with torch.device("meta"):
        model = MoVAModel(config)
    components = weight_bytes(model, dtype=getattr(torch, dtype), mode=mode)
    return {"mode": mode, "dtype": dtype, "components": components, "total_bytes": sum(components.values())}


def inspect_report(
    spec: str, *, offline: bool = True, check_keys: bool = True, quantize: str | None = None
) -> dict[str, Any]:
    """Everything ``mova inspect`` prints, as data.

    Args:
        spec: a preset name (``mova-8b``, ``tiny-random``), a checkpoint directory, or a cached hub id.
        offline: never download a hub id.
        check_keys: read the checkpoint's tensor names and shapes and compare them with the model's.
        quantize: also report the weight memory under ``--quantize`` (``int8``/``nf4``; the rest in
            bfloat16, as on a GPU), computed from the model's shapes on the meta device.
    """
    from mova.parameters import parameter_table
    from mova.pretrained import resolve_checkpoint
    from mova.released_config import read_config

    path, layout = None, "preset"
    if spec in PRESETS:
        config = MoVAConfig.from_name(spec)
    else:
        path, _ = resolve_checkpoint(spec, allow_download=not offline)
        config, layout = read_config(path)[:2]
    ours = parameter_table(config, layout="mova")
    components: dict[str, dict[str, int]] = {}
    for name, shape in ours:
        entry = components.setdefault(_component(name), {"tensors": 0, "parameters": 0})
        entry["tensors"] += 1
        entry["parameters"] += math.prod(shape)
    total = sum(c["parameters"] for c in components.values())
    report: dict[str, Any] = {
        "model": spec,
        "path": None if path is None else str(path),
        "layout": layout,
        "config": _config_summary(config),
        "components": components,
        "total_parameters": total,
        "weight_bytes": {dtype: total * size for dtype, size in DTYPE_BYTES.items()},
        "coverage": None,
        "quantized": None if quantize is None else _quantized(config, quantize, QUANTIZED_REST_DTYPE),
    }
    if path is not None and check_keys:
        expected = dict(parameter_table(config, layout=layout))
        report["coverage"] = _coverage(path, expected, layout)
    return report


def _human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GiB"


def _print_report(report: dict[str, Any]) -> None:
    config = report["config"]
    where = f" ({report['path']})" if report["path"] else ""
    click.echo(f"model: {report['model']}{where}, layout: {report['layout']}, config: {config['name']}")
    llm, base, adapter = config["language_model"], config["base_encoder"], config["adapter"]
    click.echo(
        f"language model: {llm['num_hidden_layers']} layers, hidden {llm['hidden_size']}, "
        f"{llm['num_attention_heads']} heads ({llm['num_key_value_heads']} kv), vocab {llm['vocab_size']}"
    )
    click.echo(
        f"base encoder: CLIP {base['num_hidden_layers']} layers, hidden {base['hidden_size']}, "
        f"{base['image_size']} px, patch {base['patch_size']}"
    )
    click.echo(f"experts ({len(config['experts'])}): {', '.join(config['experts']) or 'none'}")
    click.echo(
        f"adapter: {adapter['num_layers']} blocks on a {adapter['grid_size']}x{adapter['grid_size']} grid, "
        f"{adapter['image_tokens']} image tokens; routing pass: " + ("on" if config["routing"]["enabled"] else "off")
    )
    click.echo("")
    total = report["total_parameters"]
    width = max(len(name) for name in report["components"])
    click.echo(f"{'COMPONENT'.ljust(width)}  {'TENSORS':>8}  {'ELEMENTS':>15}  {'SHARE':>6}")
    for name, entry in report["components"].items():
        share = 100 * entry["parameters"] / total if total else 0.0
        click.echo(f"{name.ljust(width)}  {entry['tensors']:>8}  {entry['parameters']:>15,}  {share:>5.1f}%")
    click.echo(f"{'total'.ljust(width)}  {'':>8}  {total:>15,}")
    click.echo("(checkpoint entries: parameters plus the stored RoPE tables, aliases counted as stored)")
    click.echo("")
    click.echo(
        "weight memory: " + ", ".join(f"{dtype} {_human_bytes(size)}" for dtype, size in report["weight_bytes"].items())
    )
    quantized = report["quantized"]
    if quantized is not None:
        total = quantized["total_bytes"]
        click.echo(
            f"weight memory with --quantize {quantized['mode']} (the rest in {quantized['dtype']}): "
            f"{_human_bytes(total)} ({total / 1e9:.2f} GB)"
        )
        parts = quantized["components"]
        click.echo("  " + ", ".join(f"{name} {_human_bytes(size)}" for name, size in parts.items()))
    coverage = report["coverage"]
    if coverage is None:
        click.echo("key coverage: no checkpoint (a preset); pass a checkpoint directory to check one")
        return
    click.echo(
        f"key coverage ({coverage['layout']} layout): {coverage['present']}/{coverage['expected']} expected tensors "
        f"present, {coverage['missing']} missing, {coverage['unexpected']} unexpected, "
        f"{coverage['shape_mismatches']} shape mismatches"
    )
    for label, key in (
        ("missing", "first_missing"),
        ("unexpected", "first_unexpected"),
        ("shape", "first_shape_mismatches"),
    ):
        for name in coverage[key]:
            click.echo(f"  {label}: {name}")


@click.command(name="inspect")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-keys", is_flag=True, help="Skip reading the checkpoint's tensors (key coverage).")
@click.option(
    "--quantize",
    type=click.Choice(QUANT_MODES),
    default=None,
    help="Also show the weight memory with `mova ask --quantize` (int8 or nf4 LLM and experts, the rest in "
    "bfloat16), per component; computed from the shapes, nothing is loaded.",
)
@verbosity_options
def inspect_model(model: str, as_json: bool, no_keys: bool, quantize: str | None) -> None:
    """Summarise MODEL: config, parameters per component, weight memory per dtype, key coverage.

    MODEL is a preset (mova-8b, tiny-random), a checkpoint directory (released layout or ours), or a
    hub id already in the local Hugging Face cache (nothing is downloaded). For a checkpoint, every
    tensor name and shape is compared with what the model expects in that checkpoint's layout.
    """
    report = inspect_report(model, offline=True, check_keys=not no_keys, quantize=quantize)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
