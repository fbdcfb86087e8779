"""Ordered, reversible renames between the released MoVA checkpoint names and our module tree.

A rule is a pair of dotted-name templates anchored at the start of a key; ``{}`` stands for a
number (a layer index). Rules are applied in order, each at most once per key, so the table reads
like vLLM's ``WeightsMapper``: most specific prefixes first, the catch-all last. A rule whose ``new``
side is a tuple splits one released tensor into equal chunks along dim 0 (and joins them back when
mapping our names to the released ones).
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from .errors import CheckpointError


def _compile(template: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in template.split("{}")]
    return re.compile(r"(\d+)".join(parts))


def _fill(template: str, groups: tuple[str, ...]) -> str:
    return template.format(*groups)


@dataclass(frozen=True)
class KeyRule:
    """Rename keys starting with ``old`` so they start with ``new`` instead.

    Args:
        old: released-side prefix template, e.g. ``"model.vision_tower.vision_tower_1."``.
        new: our-side prefix template, or a tuple of them to split the tensor along dim 0.
    """

    old: str
    new: str | tuple[str, ...]
    _old_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _new_res: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        news = self.new if isinstance(self.new, tuple) else (self.new,)
        counts = {t.count("{}") for t in (self.old, *news)}
        if len(counts) != 1:
            raise ValueError(f"rule {self.old!r} -> {self.new!r}: placeholder counts differ")
        object.__setattr__(self, "_old_re", _compile(self.old))
        object.__setattr__(self, "_new_res", tuple(_compile(t) for t in news))

    @property
    def targets(self) -> tuple[str, ...]:
        return self.new if isinstance(self.new, tuple) else (self.new,)

    def scoped(self, prefix: str) -> "KeyRule":
        """The same rule with ``prefix`` put in front of both sides (used for per-expert rules)."""
        new = tuple(prefix + t for t in self.targets) if isinstance(self.new, tuple) else prefix + self.new
        return KeyRule(prefix + self.old, new)


class KeyMapper:
    """Applies an ordered list of :class:`KeyRule` in the released -> ours direction and back."""

    def __init__(self, rules: Iterable[KeyRule]) -> None:
        self.rules = tuple(rules)

    def to_ours(self, name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Map one released tensor to one or more of ours (a split rule yields several)."""
        items = [(name, tensor)]
        for rule in self.rules:
            out = []
            for key, value in items:
                match = rule._old_re.match(key)
                if match is None:
                    out.append((key, value))
                    continue
                rest = key[match.end() :]
                targets = rule.targets
                if len(targets) == 1:
                    out.append((_fill(targets[0], match.groups()) + rest, value))
                else:
                    if value.shape[0] % len(targets):
                        raise CheckpointError(
                            f"{key}: dim 0 of size {value.shape[0]} does not split into {len(targets)} equal parts"
                        )
                    chunks = value.chunk(len(targets), dim=0)
                    out.extend((_fill(t, match.groups()) + rest, c) for t, c in zip(targets, chunks, strict=True))
            items = out
        return items

    def to_released(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a whole state dict of ours to the released names (joins split tensors)."""
        items = dict(state)
        for rule in reversed(self.rules):
            out: dict[str, torch.Tensor] = {}
            pending: dict[str, dict[int, torch.Tensor]] = {}
            for key, value in items.items():
                for index, pattern in enumerate(rule._new_res):
                    match = pattern.match(key)
                    if match is not None:
                        released = _fill(rule.old, match.groups()) + key[match.end() :]
                        if len(rule._new_res) == 1:
                            out[released] = value
                        else:
                            pending.setdefault(released, {})[index] = value
                        break
                else:
                    out[key] = value
            for released, parts in pending.items():
                if len(parts) != len(rule._new_res):
                    raise CheckpointError(f"{released}: only {len(parts)} of {len(rule._new_res)} parts present")
                out[released] = torch.cat([parts[i] for i in range(len(parts))], dim=0)
            items = out
        return items


__all__ = ["KeyRule", "KeyMapper"]
