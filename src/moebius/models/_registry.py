"""A name -> config registry for model presets (``create_model("moebius")``, ``list_models()``) and the model
families a checkpoint can hold: the config class and builder of each architecture."""

from __future__ import annotations

import dataclasses
import fnmatch
import typing
from typing import Any, Callable, NamedTuple

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
    config = get_config(name)
    if overrides:
        try:
            config = dataclasses.replace(config, **overrides)
        except TypeError as exc:
            raise ConfigError(f"bad override for {name!r}: {exc}") from None
    return _PRESETS[name][0](config)


class Family(NamedTuple):
    config_cls: type
    build: Callable[[Any], nn.Module]
    preset: str  # the official full-size preset of this family


_FAMILY_ALIASES = {"student": "moebius", "teacher": "pixelhacker"}


def get_family(name: str) -> Family:
    """``"moebius"`` (the student) or ``"pixelhacker"`` (the teacher); ``student``/``teacher`` are aliases.

    A family is the preset named after it: that preset's config class and builder."""
    name = _FAMILY_ALIASES.get(name, name)
    _ensure_loaded()
    families = {}
    for preset, (builder, make_config) in _PRESETS.items():
        config_cls = type(make_config())
        if config_cls.family == preset:
            families[preset] = (builder, config_cls)
    if name not in families:
        expected = " or ".join(repr(f) for f in sorted(families))
        raise ConfigError(f"unknown model family {name!r}; expected {expected}")
    builder, config_cls = families[name]
    return Family(config_cls, builder, name)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass, with its family under ``"family"``."""
    out = {"family": type(config).family}
    out.update({f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v for f in dataclasses.fields(config)})
    return out


def config_from_dict(data: dict[str, Any]) -> Any:
    """Inverse of :func:`config_to_dict`; an unknown key is an error that names it."""
    data = dict(data)
    if "family" not in data:
        raise ConfigError("model config has no 'family' entry")
    cls = get_family(data.pop("family")).config_cls
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    for key, value in data.items():
        if isinstance(value, list) and "tuple" in str(hints.get(key, "")):
            data[key] = tuple(value)
    return cls(**data)
