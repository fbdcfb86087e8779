"""What mova knows of a vision expert without building it: ``ExpertSpec`` and the ``ExpertConfig`` base.

The registry (``registry.py``) holds one ``ExpertSpec`` per expert. Routing, configs, the processor, the
checkpoint's key names and the command line read the spec; only building the model imports the
expert's network class (``ExpertSpec.network_class``), the one part that needs torch.
"""

import importlib
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError

if TYPE_CHECKING:  # only for annotations: a spec loads without torch
    from ..image_inputs import ImageInput
    from .base import VisionExpert

# NOTE: the key of the base encoder's own preprocessed tensor. An expert whose preprocess_key is this
# value gets the base (CLIP-normalised) tensor and derives its input from it in forward (BiomedCLIP).
BASE_PREPROCESS_KEY = "clip"


@dataclass(frozen=True)
class ExpertConfig:
    """Base of the per-expert config dataclasses; fields are the expert's architecture and input size."""

    channels_field: ClassVar[str] = "hidden_size"  # the field that is the width of the expert's feature map

    @property
    def out_channels(self) -> int:
        """Channels of the expert's feature map (what the adapter fuses), known without building the network."""
        return getattr(self, self.channels_field)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExpertConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples become lists, so a JSON round trip compares equal)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def image_input(self) -> "ImageInput":
        """The input this expert takes from a page (``mova.image_inputs``): one tensor, no batch dim."""
        raise NotImplementedError


@dataclass(frozen=True)
class ExpertSpec:
    """One vision expert, described: its names, its place in the release, its config and its input.

    Attributes:
        name: registry key, ``--experts`` value, JSON value, state-dict segment ``experts.<name>.``.
            Its router letter is its place in the registry (A, B, ...; ``mova.routing.LETTERS``).
        description: one line for humans (``mova experts``).
        routing_description: the sentence the router was trained on (byte-exact upstream).
        legacy_index: the release's ``vision_tower_{i}``; None for an expert the release never had.
        config_class: the expert's config dataclass (architecture and input size).
        tiny_config: a CPU-fast config of the same architecture, for tests and the tiny-random preset.
        preprocess_key: experts with the same key share one preprocessed tensor per image, made by the
            ``image_input()`` of the first one's config (``BASE_PREPROCESS_KEY``: the base encoder's).
        network: dotted path of the ``VisionExpert`` subclass (``mova.experts.dinov2.Dinov2Expert``),
            imported by ``network_class`` when a model is built.
    """

    name: str
    description: str
    routing_description: str
    legacy_index: int | None
    config_class: type[ExpertConfig]
    tiny_config: ExpertConfig
    preprocess_key: str
    network: str

    def __post_init__(self) -> None:
        if not isinstance(self.tiny_config, self.config_class):
            raise ConfigError(
                f"{self.name}: tiny_config is a {type(self.tiny_config).__name__}, not a {self.config_class.__name__}"
            )

    @property
    def released(self) -> bool:
        """Whether the release has this expert: the presets turn on exactly those."""
        return self.legacy_index is not None

    @property
    def checkpoint_prefix(self) -> str | None:
        """Where the release keeps this expert's weights; None for an expert it never had."""
        return None if self.legacy_index is None else f"model.vision_tower.vision_tower_{self.legacy_index}."

    def network_class(self) -> type["VisionExpert"]:
        """The expert's ``nn.Module`` class (imports torch and its file on first use)."""
        module, _, name = self.network.rpartition(".")
        return getattr(importlib.import_module(module), name)


__all__ = ["BASE_PREPROCESS_KEY", "ExpertConfig", "ExpertSpec"]
