"""The ``mova`` commands, one module each; ``mova_cli.main`` registers them.

Command modules import only click and ``mova_cli.options`` at the top, so ``mova --help`` stays fast;
everything else is imported inside the command bodies.
"""


class SetupError(Exception):
    """The run cannot start or go on: the model, the output file or the environment (exit code 3)."""


class NothingToDo(Exception):
    """The inputs hold no page to answer (none found, or a page range that selects none): a warning and
    exit code 1, with nothing written."""


__all__ = ["NothingToDo", "SetupError"]
