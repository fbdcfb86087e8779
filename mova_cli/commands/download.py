"""``mova download MODEL``: fetch every file a model needs, for machines that will run offline."""

import click

from mova.constants import RANDOM_PRESETS

from ..options import verbosity_options


@click.command(name="download")
@click.argument("model")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Hugging Face cache directory.")
@verbosity_options
def download(model: str, revision: str | None, cache_dir: str | None) -> None:
    """Fetch MODEL (a hub id, default zongzhuofan/llama3-mova-8b) into the Hugging Face cache: its
    weights, config and tokenizer, and the question encoder's BERT vocabulary, which the release
    names but does not ship. Then `mova ask --offline -m MODEL` needs no network. A local directory
    is checked the same way. Prints the checkpoint directory on stdout.

    \b
    Examples:
      mova download zongzhuofan/llama3-mova-8b
      HF_HOME=/shared/hf mova download zongzhuofan/llama3-mova-8b --revision main
    """
    from mova.pretrained import fetch_checkpoint

    if model in RANDOM_PRESETS:
        click.echo(f"mova: {model} is built in (random weights): nothing to download", err=True)
        return
    fetched = fetch_checkpoint(model, revision=revision, cache_dir=cache_dir)
    click.echo(
        f"mova: {model} is ready in {fetched.path} (question-encoder vocabulary: {fetched.text_tokenizer})", err=True
    )
    click.echo(str(fetched.path))


__all__ = ["download"]
