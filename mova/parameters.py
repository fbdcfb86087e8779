"""Names and shapes of every state-dict entry of a MoVA config, without allocating any weights."""

import torch

from .checkpoint import released_key_mapper
from .config import MoVAConfig
from .errors import ConfigError
from .modeling import MoVAModel


def build_on_meta(config: MoVAConfig):
    """A MoVAModel whose tensors live on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        return MoVAModel(config)


def parameter_table(config: MoVAConfig | str, *, layout: str = "released") -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every checkpoint entry, in the released naming or ours.

    Args:
        config: a MoVAConfig or a preset name (``"mova-8b"``, ``"tiny-random"``).
        layout: ``"released"`` (upstream names, as in the published checkpoint) or ``"mova"``.
    """
    if isinstance(config, str):
        config = MoVAConfig.from_name(config)
    state = build_on_meta(config).state_dict()
    if layout == "released":
        state = released_key_mapper(config).to_released(state)
    elif layout != "mova":
        raise ConfigError(f"unknown layout {layout!r}; known: 'released', 'mova'")
    return [(name, tuple(tensor.shape)) for name, tensor in state.items()]


__all__ = ["build_on_meta", "parameter_table"]
