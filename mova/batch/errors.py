"""The errors of the batch layer, each meaning one exit code of the command line.

The library raises them; ``mova_cli`` alone turns them into exit codes (2, 3, 1, 75), so a Python
caller gets typed exceptions with the same messages the command line prints.
"""

from ..errors import MoVAError


class BatchError(MoVAError):
    """Base class of the batch layer's errors."""


class UsageError(BatchError):
    """The run was asked something inconsistent or impossible (exit code 2); nothing was written."""


class SetupError(BatchError):
    """The run cannot start or go on: the model, the output file or the environment (exit code 3)."""


class NothingToDo(BatchError):
    """The inputs hold no page to answer (none found, or a page range that selects none): a warning and
    exit code 1, with nothing written."""


class OutputInUse(BatchError):
    """Another process holds the lock of an output (exit code 75, ``EX_TEMPFAIL``: try again later)."""


__all__ = ["BatchError", "NothingToDo", "OutputInUse", "SetupError", "UsageError"]
