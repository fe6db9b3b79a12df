"""A name -> config registry for model presets: ``create_model("moebius")``, ``list_models()``."""

from __future__ import annotations

import fnmatch
from typing import Any, Callable

import torch.nn as nn

from ..errors import ConfigError

# name -> (builder taking a config, zero-argument config factory)
_PRESETS: dict[str, tuple[Callable[[Any], nn.Module], Callable[[], Any]]] = {}


def register_preset(name: str, builder: Callable[[Any], nn.Module]) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator: register a zero-argument function returning a config under ``name``."""

    def wrap(make_config: Callable[[], Any]) -> Callable[[], Any]:
        if name in _PRESETS:
            raise RuntimeError(f"model preset {name!r} registered twice")
        _PRESETS[name] = (builder, make_config)
        return make_config

    return wrap


def _ensure_loaded() -> None:
    # Importing the model modules runs their registrations.
    from . import student, teacher  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered presets matching a shell-style ``pattern``."""
    _ensure_loaded()
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def get_config(name: str) -> Any:
    """The config dataclass of preset ``name``."""
    _ensure_loaded()
    if name not in _PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(sorted(_PRESETS))}")
    return _PRESETS[name][1]()


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build preset ``name`` with freshly initialised weights; keyword overrides replace config fields."""
    import dataclasses

    config = get_config(name)
    if overrides:
        try:
            config = dataclasses.replace(config, **overrides)
        except TypeError as exc:
            raise ConfigError(f"bad override for {name!r}: {exc}") from None
    return _PRESETS[name][0](config)
