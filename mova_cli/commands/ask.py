"""``mova ask PATH...``: answer prompts about every page of every input, one JSONL record each.

This module is the command's Click surface only; ``mova_cli/ask_run.py`` turns the options into a
``mova.batch.AskSpec`` (with what only a command line has: ``-p -``, ``--format``, ``--progress``,
``--gpus``) and runs it with ``mova.batch.run``. The model is reached only through
``mova.batch.answering.open_model``, the one seam tests replace with a stub engine.
"""

import sys
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import click

from mova.batch.jsonl import encode
from mova.batch.outcome import Outcome
from mova.batch.parts import read_output
from mova.batch.spec import STDOUT, AskSpec, check

from ..options import (
    ARGS_META_KEY,
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
    usage_errors,
    verbosity_options,
)
from ..rendering import JSONL, render
from ..terminal import TerminalObserver


@click.command(name="ask")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option(
    "-p",
    "--prompt",
    "prompt",
    multiple=True,
    help="A question to ask about every input (repeatable); '-' reads one from stdin.",
)
@click.option(
    "--prompt-file",
    "prompt_file",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A file whose whole text is one question for every input (repeatable; for long prompts).",
)
@click.option(
    "--prompts",
    "prompts",
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
    "complete (e.g. cut by --max-new-tokens) or holds a number no float64 holds is an error record. Objects are "
    'closed: only the keys they declare, unless they say "additionalProperties": true (or a schema for the '
    'extra values). A prompts line\'s "schema" key wins.',
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
    default=AskSpec.default("batch_size"),
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

    Several GPUs or machines: `--ray [ADDRESS]` answers on Ray Data (a model replica per GPU, on this
    machine or a cluster; this process writes -o); `--gpus 0,1,2` is that on a local Ray (without Ray:
    one process per GPU). `accelerate launch -m mova_cli ask ...` or `torchrun` split the items over
    processes and merge their parts into -o; `--shard K/N` answers one part and `mova merge` joins the
    parts. A model larger than one GPU: `--device-map auto`.

    \b
    Examples:
      mova ask scans/ -p "What is the total?" -o totals.jsonl
      mova ask report.pdf --pages 1-3 -p "Summarise this page." -m tiny-random
      mova ask --prompts questions.jsonl --image-folder images/ -o answers.jsonl
      mova ask scans/ -p "What is the total?" --gpus 0,1,2,3 -o totals.jsonl
      mova ask /shared/scans -p "What is the total?" -o totals.jsonl --ray head:6379
    """
    with usage_errors():
        return _run(options, quiet=get_verbosity(ctx).quiet, argv=ctx.meta.get(ARGS_META_KEY))


def _run(options: dict[str, Any], *, quiet: bool, argv: list[str] | None) -> Outcome:
    """The options as an ``AskSpec``, plus what only a command line has: ``--gpus`` (start one process per
    GPU), ``-p -`` (stdin), ``--format`` (render at the end) and the progress on stderr."""
    # The runner imports Pillow (and --gpus torch): only once the command runs, not for `mova ask --help`.
    from mova.batch.runner import current_world, run

    from ..gpus import launch, resolve_gpus

    fmt, progress, gpus = options.pop("format"), options.pop("progress"), options.pop("gpus")
    spec = AskSpec.create(**options)
    _check_format(fmt, spec, gpus, distributed=current_world().distributed)
    if gpus is not None and not spec.dry_run:
        spec = check(spec)  # usage errors once, here, not in every launched process
        spec, launched = resolve_gpus(spec, gpus)
        if launched:
            return Outcome(launched_exit_code=launch(launched, argv))
    spec = replace(spec, prompt=read_stdin_prompt(spec.prompt))
    observer = TerminalObserver(progress, quiet=quiet)
    if fmt != JSONL:
        return _run_rendered(spec, fmt, observer)
    outcome = run(spec, observer=observer)
    if outcome.dry_run is not None:
        _print_dry_run(outcome.dry_run, quiet=quiet)
    return outcome


def _check_format(fmt: str, spec: AskSpec, gpus: tuple[int, ...] | None, *, distributed: bool) -> None:
    if fmt != JSONL and spec.output != STDOUT:
        raise click.UsageError(
            f"--format {fmt} renders on stdout; -o always writes JSONL (render it with `mova export {spec.output} "
            f"--format {fmt}`)"
        )
    if fmt != JSONL and (gpus is not None or spec.shard is not None or distributed):
        raise click.UsageError(
            f"--format {fmt} renders one process's answers: with --gpus, --shard or a launcher, write -o FILE and "
            f"render it with `mova export FILE --format {fmt}`"
        )


def read_stdin_prompt(prompts: tuple[str, ...]) -> tuple[str, ...]:
    """``-p -``: the prompt read from stdin, once (after ``--gpus`` has started its processes: they read
    their own)."""
    if prompts.count("-") > 1:
        raise click.UsageError("-p - reads the prompt from stdin: give it once")
    if "-" not in prompts:
        return prompts
    text = click.get_text_stream("stdin").read().strip()
    if not text:
        raise click.UsageError("-p -: stdin held no prompt")
    return tuple(text if item == "-" else item for item in prompts)


def _run_rendered(spec: AskSpec, fmt: str, observer: TerminalObserver) -> Outcome:
    from mova.batch.runner import run

    """``--format csv|md|json|text``: run into a temporary JSONL file, then render it on stdout (also when
    the run stops early: what was answered is shown)."""
    with TemporaryDirectory(prefix="mova-ask-") as folder:
        output = str(Path(folder) / "answers.jsonl")
        try:
            return run(replace(spec, output=output), observer=observer)
        finally:
            if Path(output).exists():
                sys.stdout.buffer.write(render(read_output(output)[1], fmt))
                sys.stdout.flush()


def _print_dry_run(report: dict[str, Any], *, quiet: bool) -> None:
    """``--dry-run``: the plan as one JSON line on stdout, and a sentence on stderr."""
    sys.stdout.buffer.write(encode(report) + b"\n")
    sys.stdout.flush()
    if not quiet:
        errors = report["to_do"] - report["to_answer"]
        of_them = f" ({errors} of them error records)" if errors else ""
        click.echo(
            f"plan: {report['items']} items over {report['pages']} pages of {report['files']} files: "
            f"{report['done']} done, {report['to_do']} to do{of_them}",
            err=True,
        )
