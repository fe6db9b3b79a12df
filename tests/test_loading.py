"""load_official, our folder format and `moebius convert`: strict, safe, lossless."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from moebius import CheckpointError, create_model, load_official
from moebius.cli import main
from moebius.models.student import MoebiusUNet
from moebius.weights.official import infer_family, read_state_dict
from moebius.weights.serialization import save_model


@pytest.fixture(scope="module")
def official_bin(tmp_path_factory, student_state):
    path = tmp_path_factory.mktemp("official") / "diffusion_pytorch_model.bin"
    torch.save(student_state, path)
    return path


def _assert_same_state(model, state):
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key


def test_official_bin_loads_strictly_and_infers_the_student(official_bin, student_state):
    model = load_official(official_bin)
    assert isinstance(model.diff_model, MoebiusUNet)
    assert not model.training
    _assert_same_state(model, student_state)
    # A folder with the official file name works too, as does an explicit kind.
    assert isinstance(load_official(official_bin.parent, kind="student").diff_model, MoebiusUNet)


def test_safetensors_with_official_keys_load(tmp_path, student_state):
    path = tmp_path / "student.safetensors"
    save_file({k: v.contiguous() for k, v in student_state.items()}, str(path))
    _assert_same_state(load_official(path), student_state)


def test_bf16_checkpoint_is_cast_to_float32(student_state):
    half = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in student_state.items()}
    model = load_official(half)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_wrong_kind_is_refused(student_state):
    with pytest.raises(CheckpointError, match="missing"):
        load_official(student_state, kind="teacher")


def test_missing_unexpected_and_misshapen_keys_are_named(student_state):
    state = dict(student_state)
    del state["diff_model.conv_out.bn2.running_var"]
    state["diff_model.extra.weight"] = torch.zeros(1)
    state["diff_model.encoder_hid_proj.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as info:
        load_official(state)
    message = str(info.value)
    assert "diff_model.conv_out.bn2.running_var" in message
    assert "diff_model.extra.weight" in message
    assert "diff_model.encoder_hid_proj.bias (7,)" in message


def test_not_a_model_checkpoint_is_explained():
    with pytest.raises(CheckpointError, match="VAE"):
        infer_family({"encoder.conv_in.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="non-empty dict"):
        load_official({})


def test_corrupted_file_gives_a_clear_error(tmp_path, official_bin):
    broken = tmp_path / "diffusion_pytorch_model.bin"
    broken.write_bytes(official_bin.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_official(broken)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        load_official(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_official(tmp_path / "absent.bin")


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_RunsCode.marker}",))


def test_a_pickle_that_runs_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "was_executed"
    _RunsCode.marker = marker
    path = tmp_path / "evil.bin"
    with path.open("wb") as f:
        pickle.dump({"diff_model.x": _RunsCode()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()


def test_folder_round_trip_keeps_config_and_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("moebius-tiny").eval()
    save_model(model, tmp_path / "tiny")
    loaded = load_official(tmp_path / "tiny")
    assert loaded.config == model.config
    _assert_same_state(loaded, model.state_dict())
    with pytest.raises(CheckpointError, match="already exists"):
        save_model(model, tmp_path / "tiny")


def test_convert_cli_is_lossless_both_ways(tmp_path, official_bin, capsys):
    folder = tmp_path / "converted"
    assert main(["convert", str(official_bin), str(folder)]) == 0
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    back = tmp_path / "back.bin"
    assert main(["convert", str(folder), str(back)]) == 0
    original = torch.load(official_bin, weights_only=True)
    restored = torch.load(back, weights_only=True)
    assert list(original) == list(restored)
    for key in original:
        assert original[key].dtype == restored[key].dtype and torch.equal(original[key], restored[key]), key


def test_convert_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    (tmp_path / "bad.bin").write_bytes(b"not a checkpoint")
    assert main(["convert", str(tmp_path / "bad.bin"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moebius convert: error:") and "\n" not in err
    assert not (tmp_path / "out").exists()
