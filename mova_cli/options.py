"""Option bundles shared by commands, and the custom parameter types (page ranges, expert lists).

Nothing heavy is imported here: ``mova --help`` must stay fast. The expert registry (which imports
torch) is only imported when an ``--experts`` list is actually converted.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from .plan import PageSelection, parse_pages

DEFAULT_MODEL = "zongzhuofan/llama3-mova-8b"
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16")
ATTN_CHOICES = ("sdpa", "eager", "flash_attention_2")


# --- parameter types ----------------------------------------------------------------------------


class PagesType(click.ParamType):
    """``1-3,7,-1``: 1-based pages and inclusive ranges; negative numbers count from the end."""

    name = "pages"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> PageSelection:
        if isinstance(value, PageSelection):
            return value
        try:
            return parse_pages(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@dataclass(frozen=True)
class ExpertChoice:
    """What ``--experts`` asked for.

    Attributes:
        forced: None lets the router choose (``auto``); a tuple forces exactly those experts (names,
            registry order); the empty tuple (``none``) runs no expert.
    """

    forced: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        """The canonical spelling (``auto``, ``none`` or comma-separated names), used in record ids."""
        if self.forced is None:
            return "auto"
        return ",".join(self.forced) if self.forced else "none"


class ExpertsType(click.ParamType):
    """``auto``, ``none``, or a comma-separated list of expert names or router letters (``A,dinov2``)."""

    name = "experts"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ExpertChoice:
        if isinstance(value, ExpertChoice):
            return value
        text = str(value).strip()
        if text.lower() == "auto":
            return ExpertChoice(None)
        if text.lower() == "none":
            return ExpertChoice(())
        from mova.experts import EXPERTS  # the registry imports torch: only when a list is given

        names = list(EXPERTS)
        chosen: list[str] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if len(item) == 1 and item.isalpha() and item.isupper():
                index = ord(item) - ord("A")
                if index >= len(names):
                    self.fail(f"no expert has letter {item!r}; letters: A-{chr(ord('A') + len(names) - 1)}", param, ctx)
                chosen.append(names[index])
            elif item.lower() in EXPERTS:
                chosen.append(item.lower())
            else:
                self.fail(
                    f"unknown expert {item!r}; use auto, none, or names/letters from: "
                    + ", ".join(f"{chr(ord('A') + i)}={n}" for i, n in enumerate(names)),
                    param,
                    ctx,
                )
        if not chosen:
            self.fail("empty expert list; use auto, none, or names/letters", param, ctx)
        return ExpertChoice(tuple(name for name in names if name in chosen))


PAGES = PagesType()
EXPERT_LIST = ExpertsType()

# --- verbosity (accepted on the root group and on commands) ---------------------------------------


@dataclass
class Verbosity:
    verbose: int = 0
    quiet: bool = False

    @property
    def level(self) -> int:
        return -1 if self.quiet else self.verbose


def get_verbosity(ctx: click.Context) -> Verbosity:
    """The run's verbosity, shared by the root group and its commands."""
    root = ctx.find_root()
    if not isinstance(root.obj, Verbosity):
        root.obj = Verbosity()
    return root.obj


def _apply_verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if not value:
        return
    state = get_verbosity(ctx)
    if param.name == "verbose":
        state.verbose += value
    else:
        state.quiet = True
    from .progress import configure_logging

    configure_logging(state.level)


def verbosity_options(fn: Callable) -> Callable:
    """``-v/--verbose`` (repeatable) and ``-q/--quiet``."""
    fn = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_apply_verbosity,
        help="No progress bar or summary; only errors on stderr.",
    )(fn)
    fn = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_apply_verbosity,
        help="More log output on stderr (-vv for debug).",
    )(fn)
    return fn


# --- option bundles ------------------------------------------------------------------------------


def _stack(fn: Callable, options: list[Callable]) -> Callable:
    for option in reversed(options):
        fn = option(fn)
    return fn


def model_options(fn: Callable) -> Callable:
    """Which model, where it runs, in which precision."""
    return _stack(
        fn,
        [
            click.option(
                "-m",
                "--model",
                default=DEFAULT_MODEL,
                show_default=True,
                envvar="MOVA_MODEL",
                show_envvar=True,
                help="Hugging Face hub id, a local checkpoint directory, or 'tiny-random' "
                "(a built-in random model for offline demos and tests: its answers are random text).",
            ),
            click.option("--revision", help="Hub revision (branch, tag or commit) of a hub model."),
            click.option("--cache-dir", type=click.Path(file_okay=False), help="Hugging Face cache directory."),
            click.option(
                "--offline",
                is_flag=True,
                help="Never download: use the local copy or the Hugging Face cache only (also: HF_HUB_OFFLINE=1).",
            ),
            click.option(
                "--device",
                default="auto",
                show_default=True,
                envvar="MOVA_DEVICE",
                show_envvar=True,
                help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps ...",
            ),
            click.option(
                "--dtype",
                type=click.Choice(DTYPE_CHOICES),
                default="auto",
                show_default=True,
                envvar="MOVA_DTYPE",
                show_envvar=True,
                help="Weight precision: auto is bfloat16 on GPU, float32 on CPU.",
            ),
            click.option(
                "--attn",
                type=click.Choice(ATTN_CHOICES),
                default="sdpa",
                show_default=True,
                help="Attention implementation of the language model.",
            ),
        ],
    )


def generation_options(fn: Callable) -> Callable:
    """Decoding of the answer pass (the routing pass is always greedy, 16 tokens, as upstream)."""
    return _stack(
        fn,
        [
            click.option(
                "--max-new-tokens",
                type=click.IntRange(min=1),
                default=128,
                show_default=True,
                help="Longest answer, in tokens.",
            ),
            click.option(
                "--temperature",
                type=click.FloatRange(min=0.0),
                default=0.0,
                show_default=True,
                help="0 is greedy decoding (as MoVA is evaluated); above 0 samples.",
            ),
            click.option(
                "--top-p",
                type=click.FloatRange(min=0.0, max=1.0, min_open=True),
                default=None,
                help="Nucleus sampling threshold (only with --temperature > 0).",
            ),
            click.option("--seed", type=int, default=0, show_default=True, help="Random seed for sampling."),
        ],
    )


def input_options(fn: Callable) -> Callable:
    """How inputs are found, read and rendered."""
    return _stack(
        fn,
        [
            click.option(
                "--files-from",
                type=click.File("r", encoding="utf-8", errors="surrogateescape"),
                help="Read more input paths from FILE, one per line ('-' for stdin).",
            ),
            click.option(
                "-0", "--null", is_flag=True, help="--files-from names are separated by NUL bytes (find -print0)."
            ),
            click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders of folder inputs."),
            click.option(
                "--include",
                multiple=True,
                help="Only use folder files whose path or name matches this glob (repeatable).",
            ),
            click.option("--exclude", multiple=True, help="Skip files and folders matching this glob (repeatable)."),
            click.option(
                "--dpi",
                type=click.IntRange(min=10, max=1200),
                default=200,
                show_default=True,
                help="Resolution at which PDF pages are rendered.",
            ),
            click.option(
                "--max-side",
                type=click.IntRange(min=0),
                default=1024,
                show_default=True,
                help="Cap on the longer side of a rendered PDF page, in pixels (0: no cap). The largest expert "
                "input is 1024 px.",
            ),
            click.option(
                "--pages",
                type=PAGES,
                default=None,
                help="Pages to use, e.g. '1-3,7,-1' (1-based; -1 is the last page). Default: all.",
            ),
            click.option("--password", default=None, help="Password for encrypted PDFs."),
            click.option(
                "--workers",
                type=click.IntRange(min=0),
                default=None,
                help="Processes that read and render pages ahead of the model (default: CPUs, at most 8; "
                "0: read in the main process).",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=120.0,
                show_default=True,
                help="Seconds one page may take to read or render before it is an error record (needs workers).",
            ),
        ],
    )


def expert_options(fn: Callable) -> Callable:
    """Routing control."""
    return _stack(
        fn,
        [
            click.option(
                "--experts",
                type=EXPERT_LIST,
                default="auto",
                show_default=True,
                help="auto: the router chooses; none: no expert (CLIP only); or a comma-separated list of "
                "expert names or router letters to force (see `mova experts`).",
            ),
            click.option(
                "--route-only",
                is_flag=True,
                help="Only run the routing pass: records say which experts were chosen, with no answer.",
            ),
        ],
    )


def output_options(fn: Callable) -> Callable:
    """Where records go, and how an existing output file is resumed."""
    return _stack(
        fn,
        [
            click.option(
                "-o",
                "--output",
                default="-",
                show_default=True,
                type=click.Path(dir_okay=False, allow_dash=True),
                help="JSONL file to append records to ('-' is stdout). Rerunning with the same file resumes.",
            ),
            click.option(
                "--overwrite",
                is_flag=True,
                help="Start the output file afresh instead of resuming it.",
            ),
            click.option(
                "--retry-failed",
                is_flag=True,
                help="When resuming, redo the items whose records are errors (their old records are dropped).",
            ),
        ],
    )


__all__ = [
    "DEFAULT_MODEL",
    "EXPERT_LIST",
    "PAGES",
    "ExpertChoice",
    "ExpertsType",
    "PagesType",
    "Verbosity",
    "expert_options",
    "generation_options",
    "get_verbosity",
    "input_options",
    "model_options",
    "output_options",
    "verbosity_options",
]
