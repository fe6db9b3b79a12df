"""``compile=True`` / ``--compile``: the U-Net under torch.compile gives eager's outputs, keeps its compiled
kernels in the on-disk cache so a second process compiles nothing, and fails in one line where it cannot work.

Inductor compiles the tiny student in minutes on a CPU, so the fast tests compile :class:`ToyUNet`, a
stand-in with the denoiser's call that compiles in seconds; the slow test compiles a two-level student
through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from moebius.cli import main
from moebius.errors import ConfigError
from moebius.pipeline import MoebiusInpaintPipeline
from moebius.pipeline.compiled import CompiledUNet, compile_cache_dir, compile_mode, use_compile_cache
from moebius.models.vae import AutoencoderKL
from test_pipeline import TINY_F8_VAE, scene

TESTS = Path(__file__).resolve().parent


class ToyUNet(nn.Module):
    """The denoiser's call, (x (B, 9, h, w), t (1,), ids (B, 10)) -> ε (B, 4, h, w), in a few layers."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(latent_multiple=4)
        self.conv_in = nn.Conv2d(9, 16, 3, padding=1)
        self.ids = nn.Embedding(20, 16)
        self.conv_out = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x) * torch.cos(t.to(x.dtype) / 1000)
        h = h + self.ids(ids).mean(1)[:, :, None, None]
        return self.conv_out(nn.functional.silu(h))


def toy_pipeline(dtype: torch.dtype = torch.float32, **kwargs) -> MoebiusInpaintPipeline:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pipe = MoebiusInpaintPipeline(ToyUNet(), AutoencoderKL(TINY_F8_VAE), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dtype=dtype)


def _call(pipe: MoebiusInpaintPipeline) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    image, mask = scene()
    record: dict[str, torch.Tensor] = {}
    out = pipe(image, mask, num_inference_steps=2, seed=0, output_type="np", intermediates=record)
    return out.images[0], record


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test compiles into its own cache folder, never the user's."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    return tmp_path / "inductor"


def _compare(dtype: torch.dtype, tolerance: float, levels: int) -> None:
    eager, compiled = toy_pipeline(dtype), toy_pipeline(dtype, compile=True)
    assert compiled.compiled and not eager.compiled
    eager_image, eager_record = _call(eager)
    compiled_image, compiled_record = _call(compiled)
    assert isinstance(compiled._models().unet, CompiledUNet)
    for name in ("step00_eps_raw_uncond_cond", "step01_eps_raw_uncond_cond", "step01_latents_after"):
        torch.testing.assert_close(compiled_record[name], eager_record[name], rtol=tolerance, atol=tolerance)
    assert np.abs(compiled_image.astype(int) - eager_image.astype(int)).max() <= levels


_SECOND_PROCESS = """
import json
from torch._dynamo.utils import counters
from test_compile import _call, toy_pipeline
_call(toy_pipeline(compile=True))
print(json.dumps(dict(counters["inductor"])))
"""


def test_compiled_gives_eager_outputs_and_a_second_process_reuses_the_kernels(cache):
    from torch._dynamo.utils import counters

    counters.clear()
    _compare(torch.float32, 1e-5, 1)
    assert counters["inductor"]["fxgraph_cache_miss"] >= 1 and any(cache.iterdir())  # compiled, and kept

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    done = subprocess.run([sys.executable, "-c", _SECOND_PROCESS], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout.strip().splitlines()[-1])
    assert second.get("fxgraph_cache_hit", 0) >= 1 and second.get("fxgraph_cache_miss", 0) == 0, second


def test_compiled_bfloat16_gives_eager_outputs():
    _compare(torch.bfloat16, 2e-2, 3)  # bf16 keeps 8 bits: two fusions of the same sums round apart


def test_cache_folder_default_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache_dir() == tmp_path / "xdg" / "moebius" / "inductor"
    assert use_compile_cache() == tmp_path / "xdg" / "moebius" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "xdg" / "moebius" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_compile_cache() == tmp_path / "mine" and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_mode_follows_the_device():
    assert compile_mode(torch.device("cuda", 0)) == "reduce-overhead"  # CUDA graphs
    assert compile_mode(torch.device("cpu")) == "default"


@pytest.fixture()
def no_cxx():
    from torch._inductor import config

    with config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
        yield


def test_no_compiler_is_one_clear_error(no_cxx):
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        toy_pipeline(compile=True)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from test_pipeline import tiny_pipeline

    return tiny_pipeline().save_pretrained(tmp_path_factory.mktemp("w") / "pipe")


def _inputs(folder: Path) -> tuple[Path, Path]:
    from PIL import Image

    image, mask = scene()
    Image.fromarray(image).save(folder / "in.png")
    Image.fromarray(mask).save(folder / "mask.png")
    return folder / "in.png", folder / "mask.png"


def test_cli_flag_builds_a_compiling_pipeline(weights, tmp_path):
    from moebius.cli import _build_parser, _options

    image, mask = _inputs(tmp_path)
    for command in (["inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png")],
                    ["batch", "--images", str(tmp_path), "--masks", str(mask), "--output", str(tmp_path / "out")]):
        args = _build_parser().parse_args([*command, "--weights", str(weights), "--device", "cpu", "--compile"])
        assert _options.load_pipeline(args).compiled


def test_cli_without_a_compiler_is_one_clear_line(weights, tmp_path, no_cxx, capsys):
    image, mask = _inputs(tmp_path)
    common = ["--weights", str(weights), "--device", "cpu", "--steps", "1", "--quiet", "--compile"]
    assert main(["inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png"), *common]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "C++ compiler" in err and "Traceback" not in err, err
    assert main(["batch", "--images", str(tmp_path), "--masks", str(mask), "--output", str(tmp_path / "out"),
                 *common]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "C++ compiler" in err, err
    assert not (tmp_path / "o.png").exists() and not any((tmp_path / "out").iterdir())


def test_new_shapes_run_eagerly_once_and_graph_outputs_are_copied_out(monkeypatch):
    """With torch.compile replaced by a recorder: the first call per shape is eager, later ones compiled;
    under CUDA graphs the output is a copy, since the graph's memory is overwritten by the next replay."""
    calls, options, returned = [], [], []

    def fake_compile(module, **kwargs):
        options.append(kwargs)

        def run(*args):
            calls.append(args[0].shape)
            returned.append(module(*args))
            return returned[-1]
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    unet = ToyUNet()
    ids = torch.zeros(1, 10, dtype=torch.long)
    small, large = torch.randn(1, 9, 4, 4), torch.randn(1, 9, 8, 8)
    on_cpu = CompiledUNet(unet, torch.device("cpu"))
    for x in (small, small, small, large, large):
        on_cpu(x, torch.tensor([1]), ids)
    assert options == [{"mode": "default", "dynamic": False}] and calls == [small.shape] * 2 + [large.shape]

    graphs = CompiledUNet(unet, torch.device("cuda"))  # nothing runs on the GPU: torch.compile is faked
    graphs(small, torch.tensor([1]), ids)
    out = graphs(small, torch.tensor([1]), ids)
    assert options[-1] == {"mode": "reduce-overhead", "dynamic": False}
    assert out is not returned[-1] and torch.equal(out, returned[-1])
