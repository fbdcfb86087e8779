"""Expert E: the Deplot image encoder (upstream ``vision_tower_5``): Pix2Struct-base sizes, same code as D.

Only its registry entry differs from D's (sizes, descriptions, release index); it shares D's input.
"""

from .pix2struct import Pix2StructExpert
from .registry import DEPLOT


class DeplotExpert(Pix2StructExpert):
    spec = DEPLOT


__all__ = ["DeplotExpert"]
