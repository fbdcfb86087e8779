"""The ``mova`` commands, one module each; ``mova_cli.main`` registers them.

Command modules import only click and ``mova_cli.options`` at the top, so ``mova --help`` stays fast;
everything else is imported inside the command bodies.
"""

from dataclasses import dataclass


class SetupError(Exception):
    """The run cannot start or go on: the model, the output file or the environment (exit code 3)."""


class NothingToDo(Exception):
    """The inputs hold no page to answer (none found, or a page range that selects none): a warning and
    exit code 1, with nothing written."""


@dataclass(frozen=True)
class Outcome:
    """What a command's run came to; ``mova_cli.main`` alone turns it into the exit code.

    Attributes:
        failed: what failed (``ask``: items whose record is an error; ``merge``: items missing or in
            conflict; ``status``: items not ok, torn files); exit code 1 when any.
        launched_exit_code: the exit code of the processes this run started (``--gpus``), passed on.
    """

    failed: int = 0
    launched_exit_code: int | None = None


__all__ = ["NothingToDo", "Outcome", "SetupError"]
