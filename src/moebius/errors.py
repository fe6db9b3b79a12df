"""Errors a user can cause. The library raises them; the CLI prints one line; the server answers 4xx."""


class MoebiusError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(MoebiusError, ValueError):
    """A checkpoint file is unreadable, of the wrong model, or does not match the architecture."""


class ConfigError(MoebiusError, ValueError):
    """A configuration is invalid (unknown preset, unknown key, bad value)."""


class InputError(MoebiusError, ValueError):
    """An input image, mask or argument is invalid."""
