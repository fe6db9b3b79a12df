"""``torch.compile`` of the U-Net the sampling loop calls, with Inductor's on-disk caches kept between runs.

The mode depends on the device: on CUDA ``"reduce-overhead"``, which replays each step as one CUDA graph
(a step of the student launches hundreds of small kernels, and at small batches launching them is a good
part of the step); elsewhere torch's default mode (CUDA graphs do not exist there).

Shapes are compiled static (``dynamic=False``). Inpainting sizes vary, but the fast path's Local-λ gathers its
value patches in a Python loop over row chunks and caches Interactive-λ position tables per grid size, so a
symbolic latent size would be specialised back to a number anyway; CUDA graphs are recorded per shape in any
case; and static shapes spare the extra "automatic dynamic" compile torch would run on the second size. So
each new (batch, height, width) compiles once, and the compiled code lands in Inductor's FX-graph and
AOTAutograd caches on disk: a later process with the same shapes only re-traces the model (about 20 s for the
tiny student on a CPU) and loads the kernels. After torch's recompile limit (8 shapes per process by default,
``torch._dynamo.config.recompile_limit``) further shapes run eagerly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_mode(device: torch.device) -> str:
    """``"reduce-overhead"`` (CUDA graphs) on CUDA, torch's ``"default"`` elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept: ``$TORCHINDUCTOR_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/moebius/inductor`` (~/.cache/moebius/inductor)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "moebius" / "inductor"


def use_compile_cache() -> Path:
    """Point Inductor's caches at :func:`compile_cache_dir` for this process and return it.

    Inductor reads its cache location from the environment variable alone (and writes its own default
    back into it), so setting the variable is the only way; an explicit setting is left as it is.
    """
    folder = compile_cache_dir()
    if not os.environ.get(CACHE_ENV):
        os.environ[CACHE_ENV] = str(folder)
    return folder


def check_compile_available(device: torch.device) -> None:
    """A one-line ConfigError when ``torch.compile`` cannot work here: unsupported Python, no C++ compiler
    for CPU kernels, or no Triton for CUDA kernels."""
    from torch._dynamo.eval_frame import is_dynamo_supported

    if not is_dynamo_supported():
        raise ConfigError("compile=True (--compile): torch.compile does not support this Python/torch build; "
                          "run without it")
    if device.type == "cpu":
        from torch._inductor import config
        from torch._inductor.cpp_builder import cpp_compiler_search
        from torch._inductor.exc import InvalidCxxCompiler

        try:
            cpp_compiler_search(config.cpp.cxx)
        except InvalidCxxCompiler:
            raise ConfigError("compile=True (--compile) needs a C++ compiler for CPU kernels (g++, or the one "
                              "$CXX names); install one or run without it") from None
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError("compile=True (--compile) on CUDA needs Triton (pip install triton); run without it")


class CompiledUNet(nn.Module):
    """``torch.compile(unet)`` for the sampling loop: same call, same outputs up to float rounding.

    The first call with each new set of input shapes runs eagerly: the fast path fills per-grid-size
    caches (Interactive-λ's resampled position tables) the first time it sees a size, and a tensor cached
    from inside a compiled call would be a graph output (with CUDA graphs, memory that the next replay
    overwrites); filled eagerly, the compiled graph reads the cache as an input. That costs one eager step
    per new size.

    With CUDA graphs the compiled call returns tensors living in the graph's memory pool, which the
    next step overwrites; the output is copied out (one latent-sized tensor per step) so that callers may
    keep it, as the sampler's ``record`` and callbacks do.
    """

    def __init__(self, unet: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.mode = compile_mode(device)
        self.device = device
        self.unet = unet
        use_compile_cache()
        self._compiled = torch.compile(unet, mode=self.mode, dynamic=False)
        self._shapes_seen: set[tuple] = set()

    @property
    def config(self) -> Any:
        return self.unet.config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Failed compiles (Inductor errors, a C++ compiler that fails, missing or too-old Triton) share this base.
        from torch._dynamo.exc import ShortenTraceback

        shapes = tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in (*args, *kwargs.values()))
        if shapes not in self._shapes_seen:
            self._shapes_seen.add(shapes)
            return self.unet(*args, **kwargs)
        try:
            if self.mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
                return self._compiled(*args, **kwargs).clone()
            return self._compiled(*args, **kwargs)
        except ShortenTraceback as exc:
            detail = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ConfigError(f"compile=True (--compile): torch.compile failed ({detail}); run without it") from None
