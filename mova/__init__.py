"""mova: MoVA (mixture of vision experts, arXiv 2404.13046) inference that loads the released checkpoint."""

from .config import AdapterConfig, MoVAConfig, RoutingConfig
from .engine import Engine, EngineStats, ErrorInfo, GenerationConfig, Request, Result
from .errors import CheckpointError, ConfigError, InputError, MoVAError, RoutingError, UnknownExpertError
from .experts import EXPERTS
from .modeling import MoVAModel
from .parameter_table import parameter_table
from .pretrained import DEFAULT_MODEL, TINY_RANDOM, LoadedModel, load_model, save_tiny_checkpoint
from .processing import MoVAProcessor
from .routing import RoutingDecision

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "EXPERTS",
    "TINY_RANDOM",
    "AdapterConfig",
    "CheckpointError",
    "ConfigError",
    "Engine",
    "EngineStats",
    "ErrorInfo",
    "GenerationConfig",
    "InputError",
    "LoadedModel",
    "MoVAConfig",
    "MoVAError",
    "MoVAModel",
    "MoVAProcessor",
    "Request",
    "Result",
    "RoutingConfig",
    "RoutingDecision",
    "RoutingError",
    "UnknownExpertError",
    "load_model",
    "parameter_table",
    "save_tiny_checkpoint",
    "__version__",
]
