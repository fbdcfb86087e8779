"""Say so when an output already holds answers made with other settings than this run's.

Settings that change answers are part of every id, so a rerun with another ``--max-new-tokens``,
``--dtype`` or model answers every item again under new ids, beside the old answers. That may be
what the user wants (compare two settings) or a slip (a changed default, another machine); either
way it must not happen in silence.
"""

from collections.abc import Iterable
from typing import Any

from .jobs import RunParams


def _current(params: RunParams) -> dict[tuple[str, str], Any]:
    """The record fields (section, key) that enter the ids, as this run will write them."""
    fields: dict[tuple[str, str], Any] = {
        ("gen", "temperature"): float(params.temperature),
        ("model", "id"): params.model_id,
        ("model", "dtype"): params.dtype,
        ("model", "quant"): params.quant,
    }
    if not params.route_only:
        fields["gen", "max_new_tokens"] = params.max_new_tokens
    if params.temperature != 0:  # greedy decoding ignores them, and so do the ids
        fields["gen", "top_p"] = params.top_p
        fields["gen", "seed"] = params.seed
    return fields


def settings_drift(records: Iterable[dict[str, Any]], params: RunParams) -> list[str]:
    """``gen.max_new_tokens 64 (now 32)``-style differences between ``records`` and this run's settings.

    A record that does not say (an error record written before the model was loaded) differs in nothing.
    """
    current = _current(params)
    other: dict[tuple[str, str], set[str]] = {}
    for record in records:
        for (section, key), value in current.items():
            part = record.get(section)
            found = part.get(key) if isinstance(part, dict) else None
            if found is not None and found != value:
                other.setdefault((section, key), set()).add(str(found))
    return [
        f"{section}.{key} {', '.join(sorted(values))} (now {current[section, key]})"
        for (section, key), values in other.items()
    ]


__all__ = ["settings_drift"]
