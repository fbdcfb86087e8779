"""The ``mova`` root command: global options, command registration, and exit codes.

This is the one place where exceptions become exit codes:

====  =====================================================================
0     every item ok
1     some items failed (their error records are written; summary on stderr), or nothing to do
2     usage error (bad option, bad value, unknown expert)
3     model or setup failure (model not found, output not writable ...)
75    the output is being written by another run (its lock is held); try again later
129   terminated by SIGHUP (a closed terminal); records whole, as for Ctrl-C
130   interrupted (Ctrl-C); every record written so far is complete
141   stdout was closed by its reader (``mova ask ... | head -1``); nothing else went wrong
143   terminated by SIGTERM (Slurm, systemd, ``timeout``); records whole, as for Ctrl-C
====  =====================================================================

Nothing heavy is imported at module level: ``mova --help`` loads neither torch nor transformers.
"""

import errno
import logging
import sys
from enum import IntEnum
from typing import Any

import click

from mova.batch.errors import NothingToDo, OutputInUse, SetupError
from mova.batch.errors import UsageError as BatchUsageError
from mova.batch.outcome import Outcome
from mova.batch.signals import BROKEN_PIPE_EXIT, Terminated, silence_stdout, terminate_like_ctrl_c

from .commands.ask import ask
from .commands.convert import convert
from .commands.download import download
from .commands.experts import experts
from .commands.export import export
from .commands.init_tiny import init_tiny
from .commands.inspect import inspect_model
from .commands.merge import merge
from .commands.repair import repair
from .commands.status import status
from .options import ARGS_META_KEY, get_verbosity, verbosity_options
from .terminal import configure_logging

logger = logging.getLogger(__name__)


class ExitCode(IntEnum):
    OK = 0
    ITEMS_FAILED = 1
    USAGE = 2
    SETUP = 3
    LOCKED = 75  # sysexits' EX_TEMPFAIL: a scheduler may simply try again later
    INTERRUPTED = 130


def _error(message: str, code: ExitCode) -> click.ClickException:
    exc = click.ClickException(message)
    exc.exit_code = int(code)
    return exc


def _library_error_code(exc: BaseException) -> ExitCode | None:
    """Exit code for a ``mova`` library error, None for anything else.

    ``mova.errors`` is looked up in ``sys.modules`` rather than imported: if the library was never
    imported, the exception cannot come from it (and importing it would load torch).
    """
    errors = sys.modules.get("mova.errors")
    if errors is None or not isinstance(exc, errors.MoVAError):
        return None
    return ExitCode.USAGE if isinstance(exc, errors.UnknownExpertError) else ExitCode.SETUP


class MovaGroup(click.Group):
    """A group that maps what its commands raise or return onto the exit codes above."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGS_META_KEY] = list(args)  # `mova ask --gpus` starts itself again with these
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with terminate_like_ctrl_c():
                result = super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\nmova: interrupted; every record written so far is complete.", err=True)
            raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
        except Terminated as exc:
            message = f"mova: terminated ({exc.name}); every record written so far is complete: rerun to resume."
            click.echo(message, err=True)
            raise click.exceptions.Exit(exc.exit_code) from None
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BatchUsageError as exc:
            raise click.UsageError(str(exc)) from exc
        except OutputInUse as exc:
            raise _error(str(exc), ExitCode.LOCKED) from exc
        except NothingToDo as exc:
            click.echo(f"mova: warning: nothing to do: {exc}", err=True)
            raise click.exceptions.Exit(ExitCode.ITEMS_FAILED) from None
        except SetupError as exc:
            logger.debug("setup failure", exc_info=True)
            raise _error(str(exc), ExitCode.SETUP) from exc
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # the reader of stdout is gone (`mova ask ... | head -1`)
                silence_stdout()
                raise click.exceptions.Exit(BROKEN_PIPE_EXIT) from None
            logger.debug("setup failure", exc_info=True)
            raise _error(str(exc), ExitCode.SETUP) from exc
        except Exception as exc:
            code = _library_error_code(exc)
            if code is None:
                raise
            logger.debug("library error", exc_info=True)
            raise _error(str(exc), code) from exc
        if isinstance(result, Outcome):
            if result.launched_exit_code:
                raise click.exceptions.Exit(result.launched_exit_code)
            if result.failed:
                raise click.exceptions.Exit(ExitCode.ITEMS_FAILED)
        return result


@click.group(name="mova", cls=MovaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "--version", package_name="mova", prog_name="mova", message="%(prog)s %(version)s")
@verbosity_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Ask MoVA (a mixture-of-vision-experts model) questions about images, PDFs and charts.

    For each page and each question, MoVA first routes: it picks which expert vision encoders fit the
    question (document, chart, medical, detection, segmentation, general), then answers with their
    features fused in. Every answer is one JSON line that also says which experts were used.

    \b
    Exit codes: 0 ok, 1 some items failed (or nothing to do), 2 usage error, 3 model/setup failure, 75 output
    in use by another run, 130 interrupted (Ctrl-C), 143/129 terminated (SIGTERM/SIGHUP), 141 stdout closed.
    """
    configure_logging(get_verbosity(ctx).level)


cli.add_command(ask)
cli.add_command(convert)
cli.add_command(download)
cli.add_command(experts)
cli.add_command(export)
cli.add_command(inspect_model)
cli.add_command(init_tiny)
cli.add_command(merge)
cli.add_command(repair)
cli.add_command(status)

__all__ = ["ExitCode", "cli"]
