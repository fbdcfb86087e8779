"""What runs inside Ray's workers for ``--ray``: the decoding task and the model replica.

Both are handed rows of one unit each (``{"unit": SourceUnit, "jobs": [Job, ...]}``, pickled by Ray):
``decode_row`` adds the loaded page (a Ray CPU task), ``Replica`` (an actor of Ray Data's pool) loads the
model once and turns a batch of rows into records. Records travel back to the driver as the JSON bytes
the output file holds, so no value changes type on the way (Arrow would widen ints and merge keys).
"""

import os
import socket
from dataclasses import replace
from typing import Any

from .answering import ModelSettings, answer_units, open_model
from .jsonl import encode
from .readers import read_inline
from .records import RecordContext
from .spec import AskSpec, check_forced_experts

UNITS_PER_CALL_AUTO = 16  # units per replica call when -b is auto (the engine sizes its own batches)


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """Load one unit's page in a Ray task; a file this node cannot see says that inputs must be shared."""
    page = read_inline(row["unit"])
    unit = row["unit"]
    if page.error is not None and not os.path.exists(unit.path):
        hint = (
            f"{page.error.message} (on Ray node {socket.gethostname()}: every node must read the inputs at the "
            "same path, e.g. on a shared filesystem)"
        )
        page = replace(page, error=replace(page.error, message=hint))
    return {**row, "page": page}


def units_per_call(batch_size: int | str) -> int:
    """Rows (units) handed to a replica at a time: ``-b`` (each unit may hold several prompts)."""
    return batch_size if isinstance(batch_size, int) else UNITS_PER_CALL_AUTO


class Replica:
    """One model replica of the actor pool: the model loads once, in ``__init__``; each call answers a batch
    of decoded rows with the same ``answer_units`` step as a one-process run."""

    def __init__(self, settings: ModelSettings, spec: AskSpec, context: RecordContext) -> None:
        self.session = open_model(settings)
        self.forced = check_forced_experts(spec, self.session.experts)
        self.context = replace(context, model=self.session.info)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        """``batch``: Ray's numpy batch of rows (a column each of units, jobs, pages)."""
        groups = list(zip(batch["unit"], batch["jobs"], strict=True))
        records = answer_units(
            [(unit, list(jobs)) for unit, jobs in groups],
            list(batch["page"]),
            self.session,
            context=self.context,
            params=self.context.params,
            forced=self.forced,
        )
        return {"record": [encode(record) for record in records]}


__all__ = ["Replica", "decode_row", "units_per_call"]
