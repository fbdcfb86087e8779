"""``mova ask PATH...``: answer prompts about every page of every input, one JSONL record each.

This module is the command's Click surface only: the options are frozen into ``AskOptions`` and
handed to ``run_ask``. The rooms behind it are ``mova_cli/ask/`` (options, outputs, planning,
execute, run); the model is reached only through ``ask.execute.open_model``, the one seam tests
replace with a stub engine.
"""

from typing import Any

import click

from ..options import (
    BATCH_SIZE,
    SCHEMA,
    expert_options,
    generation_options,
    get_verbosity,
    input_options,
    model_options,
    output_options,
    parallel_options,
    placement_options,
    verbosity_options,
)


@click.command(name="ask")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option(
    "-p",
    "--prompt",
    "prompt_texts",
    multiple=True,
    help="A question to ask about every input (repeatable); '-' reads one from stdin.",
)
@click.option(
    "--prompt-file",
    "prompt_files",
    multiple=True,
    type=click.File("r", encoding="utf-8"),
    help="A file whose whole text is one question for every input (repeatable; for long prompts).",
)
@click.option(
    "--prompts",
    "prompts_file",
    type=click.Path(exists=True, dir_okay=False),
    help='JSONL of prompts: {"id", "prompt", "file"?, "pages"?, "system"?, "schema"?} per line (no "file": every '
    'input), or the reference\'s {"question_id", "image", "text"}.',
)
@click.option(
    "-s",
    "--system",
    default=None,
    help="System prompt of the answer pass, in place of the template's (a prompts line's \"system\" key wins; "
    "routing keeps the reference's). Recorded in prompt.system.",
)
@click.option(
    "--schema",
    type=SCHEMA,
    default=None,
    help='JSON Schema every answer must meet (a file, or inline JSON such as \'{"type": "object", ...}\'): '
    "decoding is constrained to it, records carry the parsed value in answer_json, and an answer that cannot "
    'complete (e.g. cut by --max-new-tokens) is an error record. A prompts line\'s "schema" key wins.',
)
@click.option(
    "--image-folder",
    type=click.Path(exists=True, file_okay=False),
    help="Folder that relative 'image'/'file' names in --prompts are resolved against.",
)
@input_options
@model_options
@placement_options
@click.option(
    "-b",
    "--batch-size",
    type=BATCH_SIZE,
    default=4,
    show_default=True,
    help="Items per model batch, or auto: as many as the GPU's free memory holds (4 on a CPU); halved after "
    "running out of memory.",
)
@generation_options
@expert_options
@output_options
@parallel_options
@verbosity_options
@click.pass_context
def ask(ctx: click.Context, **options: Any) -> Any:
    """Ask questions about images and PDF pages; write one JSON record per (page, question).

    PATH can be image files, PDFs, folders (searched recursively) or globs. Records go to stdout or
    -o FILE; progress, logs and the final summary go to stderr. Rerunning with the same -o resumes:
    items already in the file are skipped (--retry-failed redoes failed ones, --overwrite starts
    afresh). A broken input or a bad prompts line becomes an error record and the run goes on.

    Several GPUs or machines: `--gpus 0,1,2`, `accelerate launch -m mova_cli ask ...` or `torchrun`
    split the items over processes and merge their parts into -o; `--shard K/N` answers one part
    and `mova merge` joins the parts. A model larger than one GPU: `--device-map auto`.

    \b
    Examples:
      mova ask scans/ -p "What is the total?" -o totals.jsonl
      mova ask report.pdf --pages 1-3 -p "Summarise this page." -m tiny-random
      mova ask --prompts questions.jsonl --image-folder images/ -o answers.jsonl
      mova ask scans/ -p "What is the total?" --gpus 0,1,2,3 -o totals.jsonl
    """
    from ..ask.options import AskOptions
    from ..ask.run import run_ask
    from ..distributed import ARGS_META_KEY

    quiet = get_verbosity(ctx).quiet
    return run_ask(AskOptions.from_params(options), quiet=quiet, argv=ctx.meta.get(ARGS_META_KEY))
