"""The expert registry: every vision expert mova knows, in router-letter order (A, B, C, ...).

Adding an expert is one file in this package plus one line appended here (it gets the next letter,
so the letters the released router was trained on never move).
"""

from ..errors import UnknownExpertError
from .base import BASE_PREPROCESS_KEY, ExpertConfig, VisionExpert
from .biomedclip import BiomedClipExpert
from .codetr import CodetrExpert
from .deplot import DeplotExpert
from .dinov2 import Dinov2Expert
from .pix2struct import Pix2StructExpert
from .sam_h import SamHExpert
from .vary_sam_b import VarySamBExpert

EXPERTS: dict[str, type[VisionExpert]] = {
    "dinov2": Dinov2Expert,
    "vary_sam_b": VarySamBExpert,
    "codetr": CodetrExpert,
    "pix2struct": Pix2StructExpert,
    "deplot": DeplotExpert,
    "biomedclip": BiomedClipExpert,
    "sam_h": SamHExpert,
}


def get_expert(name: str) -> type[VisionExpert]:
    """The expert class registered under ``name``."""
    try:
        return EXPERTS[name]
    except KeyError:
        raise UnknownExpertError(f"unknown expert {name!r}; known: {', '.join(EXPERTS)}") from None


__all__ = ["BASE_PREPROCESS_KEY", "EXPERTS", "ExpertConfig", "VisionExpert", "get_expert"]
