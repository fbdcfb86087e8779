"""``mova convert SRC DST``: a checkpoint rewritten in our layout (safetensors + mova_config.json)."""

from pathlib import Path

import click

from ..options import verbosity_options


@click.command(name="convert")
@click.argument("source")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--dtype",
    type=click.Choice(["bfloat16", "float16", "float32"]),
    default="bfloat16",
    show_default=True,
    help="Precision of the written weights (the release is bfloat16; tiny checkpoints are float32).",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Largest safetensors file, in GiB.",
)
@click.option("--revision", help="Hub revision of SOURCE (branch, tag or commit).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Hugging Face cache directory.")
@click.option("--offline", is_flag=True, help="Never download SOURCE: use the local copy or fail.")
@click.option("--force", is_flag=True, help="Write into TARGET even if it is not empty.")
@verbosity_options
def convert(
    source: str,
    target: Path,
    dtype: str,
    shard_size: int,
    revision: str | None,
    cache_dir: str | None,
    offline: bool,
    force: bool,
) -> None:
    """Rewrite SOURCE (a checkpoint directory or hub id, e.g. the release's pickled .bin shards) into
    TARGET in our layout: mova_config.json, safetensors shards and both tokenizers. Loading TARGET
    (`mova ask -m TARGET`) then maps no names and reads no pickle. The whole model is held in memory
    once (MoVA-8B: about 24 GB in bfloat16). Prints TARGET on stdout.

    \b
    Examples:
      mova convert zongzhuofan/llama3-mova-8b ./mova-8b
      mova convert ./released-checkpoint ./mova-8b --shard-size 2
    """
    if target.exists() and any(target.iterdir()) and not force:
        raise click.UsageError(f"{target} is not empty; pass --force to write into it anyway")
    from mova.pretrained import convert_checkpoint

    convert_checkpoint(
        source,
        target,
        dtype=dtype,
        max_shard_bytes=shard_size * 2**30,
        revision=revision,
        cache_dir=cache_dir,
        allow_download=not offline,
    )
    click.echo(f"mova: wrote {source} to {target} (our layout, {dtype}, safetensors)", err=True)
    click.echo(str(target))


__all__ = ["convert"]
