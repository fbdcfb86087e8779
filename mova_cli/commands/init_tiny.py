"""``mova init-tiny DIR``: write a tiny random checkpoint, for offline demos and tests of loading."""

from pathlib import Path

import click

from ..options import verbosity_options


@click.command(name="init-tiny")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--layout",
    type=click.Choice(["released", "mova"]),
    default="released",
    show_default=True,
    help="released: config.json + pytorch_model.bin with upstream names, as on the hub; "
    "mova: mova_config.json + model.safetensors.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--force", is_flag=True, help="Write into DIRECTORY even if it is not empty.")
@verbosity_options
def init_tiny(directory: Path, layout: str, seed: int, force: bool) -> None:
    """Write a tiny random MoVA checkpoint (all experts, both tokenizers) into DIRECTORY.

    It loads like the real one (`mova ask -m DIRECTORY ...`, `mova inspect DIRECTORY`) in seconds on a
    CPU. Its weights are random: its answers are random text. Prints DIRECTORY on stdout.
    """
    if directory.exists() and any(directory.iterdir()) and not force:
        raise click.UsageError(f"{directory} is not empty; pass --force to write into it anyway")
    from mova.pretrained import save_tiny_checkpoint

    save_tiny_checkpoint(directory, layout=layout, seed=seed)
    click.echo(f"mova: wrote a tiny random checkpoint ({layout} layout) to {directory}", err=True)
    click.echo(str(directory))
