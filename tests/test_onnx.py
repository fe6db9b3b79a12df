"""ONNX export (``moebius export``) and the torch-free ONNX Runtime pipeline against the PyTorch reference.

Tiny models cover shapes, dynamic axes and the pipeline; one slow test checks the full-size student on the
official vectors. Tolerances are the PyTorch parity tests', relative to max|ref|: 5e-5 at |max| 1.97.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import onnxruntime as ort

from moebius import CheckpointError, ConfigError, create_model
from moebius.cli import main
from moebius.models.vae import TINY_VAE_CONFIG, AutoencoderKL
from moebius.onnx import OnnxInpaintPipeline
from moebius.onnx.layout import MANIFEST_FILE
from moebius.onnx.random import TorchCompatibleGenerator
from moebius.onnx.scheduler import NumpyDDIM
from moebius.schedulers.ddim import DDIMConfig, DDIMScheduler
from moebius.pipeline.loading import PipelineParts, save_pipeline
from moebius.pipeline.pipeline import MoebiusInpaintPipeline
from moebius.weights.serialization import save_model

RELATIVE_TOL = 5e-5 / 1.97
SRC = Path(__file__).resolve().parents[1] / "src"


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _close(actual: np.ndarray, expected: torch.Tensor, what: str) -> None:
    ref = expected.numpy()
    diff = float(np.abs(actual - ref).max())
    tol = RELATIVE_TOL * float(np.abs(ref).max())
    assert diff <= tol, f"{what}: max |diff| {diff:.3g} > {tol:.3g}"


def _tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("moebius-tiny").eval()


def _tiny_vae() -> AutoencoderKL:
    torch.manual_seed(1)
    return AutoencoderKL(TINY_VAE_CONFIG).eval()


@pytest.fixture(scope="module")
def unet_export(tmp_path_factory) -> tuple[torch.nn.Module, Path, str]:
    """A single U-Net checkpoint (our .safetensors folder's file) exported by the CLI: unet.onnx alone."""
    root = tmp_path_factory.mktemp("unet")
    unet = _tiny_unet()
    save_model(unet, root / "ckpt")
    code, out = _cli(["export", str(root / "ckpt" / "model.safetensors"), str(root / "onnx")])
    assert code == 0
    return unet, root / "onnx", out


@pytest.fixture(scope="module")
def pipeline_export(tmp_path_factory) -> tuple[PipelineParts, Path, str]:
    """A tiny pipeline folder (save_pretrained layout) exported by the CLI."""
    root = tmp_path_factory.mktemp("pipeline")
    parts = PipelineParts(_tiny_unet(), _tiny_vae(), DDIMConfig(), None, {"guidance_scale": 1.5})
    save_pipeline(parts, root / "weights")
    code, out = _cli(["export", str(root / "weights"), str(root / "onnx")])
    assert code == 0
    return parts, root / "onnx", out


def _cli(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


# ----------------------------------------------------------------------------------------------------
# Graphs


def test_single_checkpoint_gives_unet_onnx_alone_with_named_dynamic_inputs(unet_export):
    _, folder, out = unet_export
    assert sorted(p.name for p in folder.iterdir()) == ["unet.onnx"]
    assert f"wrote {folder / 'unet.onnx'} (" in out and "total" in out
    session = _session(folder / "unet.onnx")
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["sample", "timestep", "input_ids"]
    assert inputs["sample"].type == "tensor(float)" and inputs["timestep"].type == "tensor(int64)"
    assert inputs["input_ids"].type == "tensor(int64)"
    sample_shape = inputs["sample"].shape
    assert sample_shape[1] == 9 and all(isinstance(d, str) for d in (sample_shape[0], sample_shape[2], sample_shape[3]))
    assert session.get_outputs()[0].name == "noise"


@pytest.mark.parametrize("batch, height, width", [(2, 16, 16), (1, 4, 4), (3, 8, 20), (2, 24, 12)])
def test_one_unet_file_serves_every_size(unet_export, batch, height, width):
    """Exported once at 40×56; run at the position tables' training grid (16²), below it, and non-square."""
    unet, folder, _ = unet_export
    session = _session(folder / "unet.onnx")
    generator = torch.Generator().manual_seed(batch * 100 + height + width)
    x = torch.randn(batch, 9, height, width, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    ids = torch.tensor([list(range(10, 20)) if i % 2 else list(range(10)) for i in range(batch)])
    with torch.no_grad():
        ref = unet(x, t, ids)
    out = session.run(None, {"sample": x.numpy(), "timestep": t.numpy(), "input_ids": ids.numpy()})[0]
    assert out.shape == (batch, 4, height, width)
    _close(out, ref, f"ε at {batch}×{height}×{width}")


@pytest.mark.parametrize("batch, height, width", [(1, 8, 8), (2, 12, 20)])
def test_vae_graphs_match_pytorch(pipeline_export, batch, height, width):
    parts, folder, _ = pipeline_export
    generator = torch.Generator().manual_seed(height)
    image = torch.rand(batch, 3, height, width, generator=generator) * 2 - 1
    with torch.no_grad():
        posterior = parts.vae.encode(image)
        decoded = parts.vae.decode(posterior.mean)
    mean, std = _session(folder / "vae_encoder.onnx").run(None, {"image": image.numpy()})
    _close(mean, posterior.mean, "posterior mean")
    _close(std, posterior.std, "posterior std")
    out = _session(folder / "vae_decoder.onnx").run(None, {"latent": posterior.mean.numpy()})[0]
    _close(out, decoded, "decode")


def _converted_copy(graph: Path, folder: Path, dtype: str, quantize: str | None) -> Path:
    """A copy of ``graph`` in ``folder``, converted to ``dtype`` / ``quantize``."""
    from moebius.onnx.precision import convert_precision

    path = folder / graph.name
    shutil.copy(graph, path)
    convert_precision(path, dtype, quantize)
    return path


def _op_types(path: Path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load_model(str(path), load_external_data=False).graph.node]


def test_exported_autoencoder_attention_runs_block_by_block(pipeline_export, tmp_path):
    """The middle block's attention is a Scan over query blocks; with blocks of 5 queries (several, the
    last one padded) the decoder still equals the PyTorch one, and undoing the rewrite gives the exported
    whole-matrix graph back."""
    import onnx

    from moebius.onnx.attention import chunk_attention, restore_attention

    parts, folder, _ = pipeline_export
    for name in ("vae_encoder.onnx", "vae_decoder.onnx"):
        ops = _op_types(folder / name)
        assert "Softmax" not in ops and ops.count("Scan") == 1, name
    model = onnx.load_model(str(folder / "vae_decoder.onnx"))
    assert restore_attention(model) == 1
    whole = [n.op_type for n in model.graph.node]
    assert "Scan" not in whole and whole.count("Softmax") == 1
    assert chunk_attention(model, chunk=5) == 1
    onnx.save_model(model, str(tmp_path / "decoder5.onnx"))
    latent = torch.randn(2, 4, 3, 4, generator=torch.Generator().manual_seed(3))  # 12 queries: blocks of 5, 5, 2
    with torch.no_grad():
        decoded = parts.vae.decode(latent)
    _close(_session(tmp_path / "decoder5.onnx").run(None, {"latent": latent.numpy()})[0], decoded, "decode, 5-query blocks")


@pytest.mark.parametrize("dtype, quantize", [("float16", None), ("float32", "int8")])
def test_lower_precision_autoencoders_keep_block_attention(pipeline_export, tmp_path, dtype, quantize):
    parts, folder, _ = pipeline_export
    path = _converted_copy(folder / "vae_decoder.onnx", tmp_path, dtype, quantize)
    ops = _op_types(path)
    assert "Softmax" not in ops and ops.count("Scan") == 1
    latent = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        decoded = parts.vae.decode(latent).numpy()
    out = _session(path).run(None, {"latent": latent.numpy()})[0]
    assert out.shape == decoded.shape and np.abs(out - decoded).max() < 0.05 * np.abs(decoded).max()


@pytest.mark.slow
def test_full_size_student_matches_the_official_vectors(student_state, student_reference, tmp_path):
    from moebius import load_official
    from moebius.onnx.export import export_unet

    export_unet(load_official(student_state), tmp_path / "unet.onnx")
    ref = student_reference
    batch = ref["x"].shape[0]
    out = _session(tmp_path / "unet.onnx").run(None, {
        "sample": ref["x"].numpy(), "timestep": ref["timesteps"].reshape(-1).expand(batch).numpy().astype(np.int64),
        "input_ids": ref["input_ids"].numpy()})[0]
    _close(out, ref["sample"], "full-size ε at 64×64")


# ----------------------------------------------------------------------------------------------------
# The manifest and the numpy runtime pieces


def test_manifest_carries_what_a_runtime_needs(pipeline_export):
    parts, folder, out = pipeline_export
    for name in ("unet.onnx", "vae_encoder.onnx", "vae_decoder.onnx", MANIFEST_FILE):
        assert f"wrote {folder / name} (" in out
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["format"] == "moebius-onnx" and manifest["format_version"] == 1
    table = np.asarray(manifest["scheduler"]["alphas_cumprod"], dtype=np.float32)
    assert np.array_equal(table, DDIMScheduler(parts.scheduler_config).alphas_cumprod.numpy())
    assert manifest["autoencoder"]["scaling_factor"] == TINY_VAE_CONFIG.scaling_factor
    assert manifest["autoencoder"]["downsample_factor"] == 2 and manifest["unet"]["latent_multiple"] == 4
    assert manifest["defaults"] == {"guidance_scale": 1.5}
    assert manifest["presets"]["default"]["guidance_scale"] == 1.5
    assert manifest["presets"]["official"]["mask_downsample"] == "nearest"
    assert "fast" not in manifest["presets"]  # it needs UniPC, which an export does not sample with
    assert manifest["unet"]["cond_ids"] == list(range(10)) and manifest["unet"]["uncond_ids"] == list(range(10, 20))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps, strength", [(20, 1.0), (20, 0.99), (7, 0.5), (50, 0.05)])
def test_numpy_ddim_equals_torch_step_for_step(prediction_type, steps, strength):
    config = DDIMConfig(prediction_type=prediction_type)
    reference = DDIMScheduler(config)
    reference.set_timesteps(steps)
    expected_t = reference.timesteps_for_strength(strength)
    from moebius.onnx.export import schedule_tables

    ddim = NumpyDDIM.from_manifest(json.loads(json.dumps(schedule_tables(config))))
    timesteps = ddim.timesteps(steps, strength)
    assert timesteps.tolist() == expected_t.tolist()
    generator = torch.Generator().manual_seed(steps)
    x0, noise = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    torch_x = reference.add_noise(x0, noise, expected_t[:1])
    numpy_x = ddim.add_noise(x0.numpy(), noise.numpy(), int(timesteps[0]))
    assert np.array_equal(numpy_x, torch_x.numpy())
    for t in timesteps.tolist():
        output = torch.randn(2, 4, 8, 8, generator=generator)
        torch_x = reference.step(output, t, torch_x).prev_sample
        numpy_x = ddim.step(output.numpy(), t, numpy_x, steps)
        assert np.array_equal(numpy_x, torch_x.numpy()), f"step at t={t}"


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_numpy_noise_follows_torch_seeds(seed):
    generator, ours = torch.Generator().manual_seed(seed), TorchCompatibleGenerator(seed)
    for shape in [(1, 4, 24, 40), (1, 4, 1, 1), (2, 16, 1, 1), (1, 3), (1, 4, 5, 7)]:
        expected = torch.randn(shape, generator=generator).numpy()
        drawn = ours.randn(shape)
        assert drawn.shape == expected.shape and drawn.dtype == np.float32
        assert np.abs(drawn - expected).max() <= 2e-6, shape  # the stream is the same; transcendentals ±1 ulp
        if expected.size < 16:
            assert np.array_equal(drawn, expected)


# ----------------------------------------------------------------------------------------------------
# The pipeline


def _scene() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:40, 0:56]
    image = np.stack([(xx * 4) % 256, (yy * 6) % 256, ((xx + yy) * 3) % 256], axis=-1).astype(np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    mask[10:26, 14:40] = 255
    return image, mask


@pytest.mark.parametrize("preset, options", [("default", {}), ("official", {"num_inference_steps": 4, "native_size": 64}),
                                             ("default", {"strength": 0.5, "prefill": "telea"})])
def test_onnx_pipeline_matches_the_pytorch_pipeline_on_the_same_seed(pipeline_export, preset, options):
    parts, folder, _ = pipeline_export
    image, mask = _scene()
    call = {"num_inference_steps": 3, **options}
    reference = MoebiusInpaintPipeline(parts.unet, parts.vae, parts.scheduler_config, fast=False,
                                       defaults=parts.defaults)
    expected = reference(image, mask, preset=preset, seed=11, output_type="np", **call)
    got = OnnxInpaintPipeline(folder)(image, mask, preset=preset, seed=11, output_type="np", **call)
    assert got.images[0].shape == expected.images[0].shape
    levels = np.abs(got.images[0].astype(int) - expected.images[0].astype(int))
    assert levels.max() <= 2, f"max difference {levels.max()} levels"
    assert got.metadata[0] == expected.metadata[0]


def test_onnx_pipeline_runs_with_torch_unimportable(pipeline_export, tmp_path):
    _, folder, _ = pipeline_export
    image, mask = _scene()
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "mask.npy", mask)
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from moebius.onnx import OnnxInpaintPipeline
        pipe = OnnxInpaintPipeline({str(folder)!r})
        out = pipe(np.load({str(tmp_path / 'image.npy')!r}), np.load({str(tmp_path / 'mask.npy')!r}),
                   seed=3, num_inference_steps=2, output_type="np")
        assert out.images[0].shape == (40, 56, 3), out.images[0].shape
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", out.metadata[0].seed)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok 3"


def test_cli_inpaint_takes_an_export_folder(pipeline_export, tmp_path):
    from PIL import Image

    _, folder, _ = pipeline_export
    image, mask = _scene()
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    code, out = _cli(["inpaint", str(tmp_path / "in.png"), str(tmp_path / "mask.png"), "-o", str(tmp_path / "out.png"),
                      "--weights", str(folder), "--steps", "2", "--seed", "5", "--quiet"])
    assert code == 0, out
    assert Image.open(tmp_path / "out.png").size == (56, 40)
    assert "seed 5" in out


# ----------------------------------------------------------------------------------------------------
# Precision


@pytest.mark.parametrize("dtype, quantize", [("float16", None), ("float32", "int8")])
def test_lower_precision_graphs_are_smaller_and_run(unet_export, tmp_path, dtype, quantize):
    unet, folder, _ = unet_export
    path = _converted_copy(folder / "unet.onnx", tmp_path, dtype, quantize)
    # The tiny graph is half structure; the full-size student's unet.onnx shrinks to 0.50 and 0.36
    # (bench/onnx_benchmark.py).
    assert path.stat().st_size < 0.8 * (folder / "unet.onnx").stat().st_size
    session = _session(path)
    assert session.get_inputs()[0].type == "tensor(float)"  # callers keep feeding float32
    x = torch.randn(2, 9, 8, 12, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([list(range(10, 20)), list(range(10))])
    out = session.run(None, {"sample": x.numpy(), "timestep": np.array([500, 500]), "input_ids": ids.numpy()})[0]
    assert out.shape == (2, 4, 8, 12) and out.dtype == np.float32 and np.isfinite(out).all()


# ----------------------------------------------------------------------------------------------------
# Bad input: one line each, nothing half-written


def _one_line_error(argv: list[str], fragment: str) -> None:
    code, out = _cli(argv)
    assert code == 2
    assert out.count("\n") == 1 and "error:" in out and fragment in out, out


def test_export_refuses_a_source_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    _one_line_error(["export", str(tmp_path / "notes.txt"), str(tmp_path / "out")], "not a readable checkpoint")
    _one_line_error(["export", str(tmp_path), str(tmp_path / "out")], "no Moebius weights")
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_unwritable_destination(tmp_path):
    (tmp_path / "file").write_text("x")
    _one_line_error(["export", str(tmp_path / "file"), str(tmp_path / "file" / "out")], "is not a folder")
    _one_line_error(["export", str(tmp_path / "file"), "/proc/moebius-export"], "cannot write into /proc")


def test_export_refuses_an_existing_export_without_overwrite(pipeline_export, tmp_path):
    _, folder, _ = pipeline_export
    target = tmp_path / "onnx"
    shutil.copytree(folder, target)
    before = sorted((p.name, p.stat().st_size) for p in target.iterdir())
    _one_line_error(["export", "weights", str(target)], "already holds an ONNX export; pass --overwrite")
    assert sorted((p.name, p.stat().st_size) for p in target.iterdir()) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "photo.jpg").write_bytes(b"x")
    _one_line_error(["export", "weights", str(tmp_path / "other")], "already holds other files")


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    import moebius.onnx.export as export_module

    torch.manual_seed(0)
    save_model(create_model("moebius-tiny"), tmp_path / "ckpt")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device", "unet.onnx")

    monkeypatch.setattr(export_module, "export_unet", fail)
    _one_line_error(["export", str(tmp_path / "ckpt"), str(tmp_path / "out")], "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_export_options_are_checked_before_any_work(tmp_path):
    _one_line_error(["export", "x", str(tmp_path / "out"), "--dtype", "float16", "--quantize", "int8"], "drop --dtype")
    _one_line_error(["export", "x", str(tmp_path / "out"), "--opset", "3"], "opset must lie in")


def test_an_export_of_another_format_version_is_refused(pipeline_export, tmp_path):
    _, folder, _ = pipeline_export
    target = tmp_path / "onnx"
    shutil.copytree(folder, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest["format_version"] = 99
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format version 99"):
        OnnxInpaintPipeline(target)
    image, mask = _scene()
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    _one_line_error(["inpaint", str(tmp_path / "in.png"), str(tmp_path / "mask.png"), "-o", str(tmp_path / "o.png"),
                     "--weights", str(target)], "format version 99")
    assert not (tmp_path / "o.png").exists()


def test_serve_answers_from_an_export_folder(pipeline_export):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from moebius.serve import ServeSettings, create_app

    _, folder, _ = pipeline_export
    image, mask = _scene()
    files = {}
    for name, array in (("image", image), ("mask", mask)):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        files[name] = (f"{name}.png", buffer.getvalue(), "image/png")
    with TestClient(create_app(ServeSettings(weights=str(folder)))) as client:
        models = client.get("/v1/models").json()["models"][0]
        assert models["family"] == "moebius" and models["device"] == "cpu" and models["size_multiple"] == 8
        response = client.post("/v1/inpaint", files=files, data={"seed": "4", "num_inference_steps": "2"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Seed"] == "4"
    assert Image.open(io.BytesIO(response.content)).size == (56, 40)


def test_space_to_depth_autoencoder_exports_the_same_way(tmp_path):
    from moebius.models.space_to_depth import SpaceToDepth, SpaceToDepthConfig
    from moebius.onnx.export import export_autoencoder

    autoencoder = SpaceToDepth(SpaceToDepthConfig(factor=4))
    with torch.no_grad():
        autoencoder.colour_mean.copy_(torch.tensor([0.1, -0.2, 0.05]))
        autoencoder.colour_std.copy_(torch.tensor([0.5, 0.6, 0.7]))
    export_autoencoder(autoencoder, tmp_path)
    image = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean, std = _session(tmp_path / "vae_encoder.onnx").run(None, {"image": image.numpy()})
    _close(mean, autoencoder.encode(image).mean, "space-to-depth encode")
    assert mean.shape == (2, 48, 4, 6) and not std.any()
    decoded = _session(tmp_path / "vae_decoder.onnx").run(None, {"latent": mean})[0]
    _close(decoded, image, "space-to-depth round trip")


def test_execution_providers_are_chosen_and_checked(pipeline_export):
    _, folder, _ = pipeline_export
    pipe = OnnxInpaintPipeline(folder, providers=["CPUExecutionProvider"])
    assert all(s.get_providers() == ["CPUExecutionProvider"] for s in pipe.sessions.values())
    with pytest.raises(ConfigError, match="no NoSuchExecutionProvider"):
        OnnxInpaintPipeline(folder, providers=["NoSuchExecutionProvider"])


def test_provider_worker_times_an_export_without_torch(pipeline_export, tmp_path):
    _, folder, _ = pipeline_export
    blocker = tmp_path / "torch.py"
    blocker.write_text("raise ImportError('torch is blocked in this test')\n")
    repo = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": f"{tmp_path}:{SRC}", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, str(repo / "bench" / "onnx_provider_worker.py"), str(folder),
                          "--provider", "CPUExecutionProvider", "--size", "32", "--steps", "2", "--repeats", "1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["providers"] == ["CPUExecutionProvider"]
    assert result["step_ms"] > 0 and result["e2e_s"] > 0
