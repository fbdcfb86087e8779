"""Exceptions raised by the mova library; the CLI maps them to exit codes."""


class MoVAError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(MoVAError):
    """A configuration value or preset name is invalid."""


class UnknownExpertError(ConfigError):
    """An expert name or letter is not in the registry."""


class CheckpointError(MoVAError):
    """A checkpoint is missing, unreadable or does not match the model."""


class InputError(MoVAError):
    """An input (image, prompt, tensor shape) cannot be processed."""


class RoutingError(MoVAError):
    """The routing pass failed or produced an unusable answer."""


__all__ = ["MoVAError", "ConfigError", "UnknownExpertError", "CheckpointError", "InputError", "RoutingError"]
