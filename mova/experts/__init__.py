"""The vision experts: their registry (``registry.py``, no torch) and one network file per expert.

``EXPERTS`` maps each name to its ``ExpertSpec`` in router-letter order (A, B, C, ...), with its config
dataclass beside it in the registry; a spec's ``network_class()`` imports the expert's ``nn.Module``
(``dinov2.py`` ...; their contract is ``base.VisionExpert``) when a model is built. Adding an expert is
its network file plus one registry entry.
"""

from .registry import EXPERTS, get_expert
from .spec import BASE_PREPROCESS_KEY, ExpertConfig, ExpertSpec

__all__ = ["BASE_PREPROCESS_KEY", "EXPERTS", "ExpertConfig", "ExpertSpec", "get_expert"]
