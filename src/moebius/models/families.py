"""Model families: the config class and builder of each architecture a checkpoint can hold."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, NamedTuple

import torch.nn as nn

from ..errors import ConfigError


class Family(NamedTuple):
    config_cls: type
    build: Callable[[Any], nn.Module]
    preset: str  # the official full-size preset of this family


def get_family(name: str) -> Family:
    """``"moebius"`` (the student) or ``"pixelhacker"`` (the teacher); ``student``/``teacher`` are aliases."""
    name = {"student": "moebius", "teacher": "pixelhacker"}.get(name, name)
    if name == "moebius":
        from .student import MoebiusConfig, build_moebius

        return Family(MoebiusConfig, build_moebius, "moebius")
    if name == "pixelhacker":
        from .teacher import PixelHackerConfig, build_pixelhacker

        return Family(PixelHackerConfig, build_pixelhacker, "pixelhacker")
    raise ConfigError(f"unknown model family {name!r}; expected 'moebius' or 'pixelhacker'")


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
