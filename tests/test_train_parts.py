"""Parts of the trainer on their own: optimizer, schedule, EMA, checkpointing surgery, state files, E-LatentLPIPS."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

from moebius.train.config import OptimConfig


# Many tiny ops: a second thread only adds synchronisation (and stalls badly on a shared machine).
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_student():
    from moebius.models import get_config, get_family

    config = dataclasses.replace(get_config("moebius-tiny"), block_out_channels=(8, 16, 16), heads=2, norm_num_groups=4,
                                 cross_attention_dim=8, encoder_hid_dim=8, sample_size=8, local_kernel_size=3)
    return get_family("moebius").build(config)


def _inputs(b=2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 9, 8, 8, generator=g), torch.tensor([10, 700][:b]), torch.arange(10).repeat(b, 1)


def test_tiny_presets_pair_the_kd_features():
    import moebius

    x = torch.randn(1, 9, 16, 16)
    s = moebius.create_model("moebius-tiny")(x, 5, torch.arange(10)[None], return_block_outputs=True)
    t = moebius.create_model("pixelhacker-tiny")(x, 5, torch.arange(10)[None], return_block_outputs=True)
    assert s.block_outputs[2].shape == t.block_outputs[5].shape


def test_muon_split_and_backends_agree():
    from moebius.train.optim import Muon, MuonAdamW, newton_schulz, split_parameters

    student = _tiny_student()
    muon, adamw = split_parameters(student, OptimConfig().adamw_names)
    names = {id(p): n for n, p in student.named_parameters()}
    assert all(p.ndim >= 2 and not any(k in names[id(p)] for k in ("embedding_layer", "conv_in", "conv_out")) for p in muon)
    assert any("conv_out" in names[id(p)] for p in adamw) and all(p.ndim < 2 or "conv" in names[id(p)]
                                                                 or "embedding" in names[id(p)] for p in adamw)

    # Newton-Schulz pushes singular values towards 1.
    s = torch.linalg.svdvals(newton_schulz(torch.randn(16, 40)).float())
    assert 0.5 < s.min() and s.max() < 1.5

    if not hasattr(torch.optim, "Muon"):
        pytest.skip("this torch has no torch.optim.Muon to compare with")
    w = torch.randn(12, 20)
    grads = [torch.randn(12, 20) for _ in range(3)]
    results = []
    for cls, extra in ((Muon, {}), (torch.optim.Muon, {"adjust_lr_fn": "match_rms_adamw"})):
        p = nn.Parameter(w.clone())
        opt = cls([p], lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, ns_steps=5, **extra)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        results.append(p.detach())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=2e-3)

    # The combined optimizer steps conv weights (4-D) through 2-D views and round-trips its state.
    opt = MuonAdamW(muon, adamw, OptimConfig(lr=1e-3))
    x, t, ids = _inputs()
    before = [p.detach().clone() for p in muon[:3]]
    student(x, t, ids).square().mean().backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, muon[:3]))
    clone = MuonAdamW(muon, adamw, OptimConfig(lr=1e-3))
    clone.load_state_dict(opt.state_dict())
    assert clone.state_dict()["muon"]["state"].keys() == opt.state_dict()["muon"]["state"].keys()


def test_lr_schedule_milestones():
    from moebius.train.optim import lr_factor

    config = OptimConfig(warmup_steps=10, milestones=[111_000, 129_000], gamma=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == 1.0 and lr_factor(110_999, config) == 1.0
    assert lr_factor(111_000, config) == pytest.approx(0.1) and lr_factor(129_000, config) == pytest.approx(0.01)


def test_ema_tracks_batchnorm_statistics():
    from moebius.train.ema import EMA

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    ema = EMA(model, decay=0.5, warmup=False)
    model(torch.randn(8, 3, 4, 4) + 3)  # moves the running mean
    with torch.no_grad():
        model[0].weight.add_(1)
    ema.update(model)
    bn = model[1]
    torch.testing.assert_close(ema.shadow["1.running_mean"], 0.5 * bn.running_mean)  # started at 0
    assert ema.shadow["1.num_batches_tracked"].item() == 1
    fresh = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    ema.copy_to(fresh)
    assert torch.equal(fresh[1].running_var, ema.shadow["1.running_var"])


def test_ema_of_parameters_only_carries_the_live_statistics():
    from moebius.train.ema import EMA

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    ema = EMA(model, decay=0.5, warmup=False, batchnorm_statistics=False)
    assert sorted(ema.shadow) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    start = model[0].weight.detach().clone()
    model(torch.randn(8, 3, 4, 4) + 3)
    with torch.no_grad():
        model[0].weight.add_(1)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["0.weight"], start + 0.5)
    full = ema.full_state(model)  # what the EMA folder holds: averaged parameters, the live statistics
    assert list(full) == list(model.state_dict())
    assert torch.equal(full["1.running_mean"], model[1].running_mean) and model[1].running_mean.abs().sum() > 0
    fresh = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    ema.copy_to(fresh)  # the averaged parameters; the statistics it does not average stay the model's own
    assert torch.equal(fresh[0].weight, ema.shadow["0.weight"]) and torch.equal(fresh[1].running_var, torch.ones(4))

    # A folder written either way resumes an EMA of either kind.
    everything = EMA(fresh, decay=0.5, warmup=False)
    everything.load_state_dict({"shadow": full, "num_updates": 1})
    assert torch.equal(everything.shadow["1.running_mean"], model[1].running_mean)
    parameters_only = EMA(fresh, decay=0.5, warmup=False, batchnorm_statistics=False)
    parameters_only.load_state_dict({"shadow": everything.full_state(fresh), "num_updates": 1})
    assert torch.equal(parameters_only.shadow["0.weight"], ema.shadow["0.weight"])
    with pytest.raises(ValueError, match="does not match"):
        everything.load_state_dict({"shadow": dict(ema.shadow), "num_updates": 1})


def test_first_rank_key_points_at_the_same_place_of_process_zeros_slice():
    from moebius.train.data import KeySampler, first_rank_key

    batch, world = 2, 3
    slices = [list(zip(range(4 * batch), KeySampler(batch, rank, world))) for rank in range(world)]
    for rank in range(world):
        for (_, key), (_, key0) in zip(slices[rank], slices[0]):
            assert first_rank_key(key, batch, world) == key0
    assert first_rank_key(7, 2, 1) == 7  # one process: every key is its own


def test_gradient_checkpointing_same_gradients_and_statistics():
    from moebius.train._modules import enable_gradient_checkpointing, student_checkpoint_blocks

    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        student = _tiny_student().train()
        if checkpointing:
            assert enable_gradient_checkpointing(student, student_checkpoint_blocks()) > 0
        x, t, ids = _inputs()
        out = student(x, t, ids, return_block_outputs=True)
        probe = student.diff_model.down_blocks[2].attentions[1].proj_out.weight
        (g_probe,) = torch.autograd.grad(out.sample.square().mean(), probe, retain_graph=True)
        (out.sample.square().mean() + out.block_outputs[2].mean()).backward()
        grads = [p.grad.clone() for p in student.parameters()]
        buffers = [b.clone() for b in student.buffers()]
        results.append((g_probe, grads, buffers))
    (pa, ga, ba), (pb, gb, bb) = results
    torch.testing.assert_close(pa, pb)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)
    for a, b in zip(ba, bb):  # BatchNorm statistics updated once, not again on recomputation
        assert torch.equal(a, b)


def test_synced_batchnorm_is_plain_batchnorm_on_one_process():
    from moebius.train._modules import SyncedBatchNorm2d, sync_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    reference = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    reference.load_state_dict(model.state_dict())
    assert sync_batchnorm(model) == 1 and isinstance(model[1], SyncedBatchNorm2d)
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(model(x), reference(x))
    assert set(model.state_dict()) == set(reference.state_dict())


def test_state_files_round_trip(tmp_path):
    from moebius.train._state import capture_rng, load_state, restore_rng, save_state

    p = nn.Parameter(torch.randn(3, 4))
    opt = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.95))
    p.grad = torch.randn(3, 4)
    opt.step()
    save_state(tmp_path, "opt", opt.state_dict())
    loaded = load_state(tmp_path, "opt")
    assert loaded["param_groups"][0]["betas"] == (0.9, 0.95)
    assert torch.equal(loaded["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    save_state(tmp_path, "rng", capture_rng())
    first = torch.rand(3)
    restore_rng(load_state(tmp_path, "rng"))
    assert torch.equal(torch.rand(3), first)


def test_elatentlpips_loads_the_released_layout(tmp_path):
    from moebius.errors import CheckpointError
    from moebius.perceptual.elatentlpips import ELatentLPIPS, draw_augment_params, load_elatentlpips

    torch.manual_seed(1)
    net = ELatentLPIPS()
    state = {f"module.{k}" if k.startswith("net.") else k: v for k, v in net.state_dict().items()}
    state.update({f"lins.{k}.model.1.weight": net.state_dict()[f"lin{k}.model.1.weight"] for k in range(5)})
    torch.save(state, tmp_path / "sdxl_latest_vgg16_tuned.pth")
    loaded = load_elatentlpips(tmp_path / "sdxl_latest_vgg16_tuned.pth")
    a, b = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    g = torch.Generator().manual_seed(0)
    aug = torch.stack([draw_augment_params(g) for _ in range(2)])
    torch.testing.assert_close(loaded(a, b, aug), net(a, b, aug))
    assert (loaded(a, a, aug) == 0).all() and (loaded(a, b) > 0).all()
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.train().training
    del state["lin0.model.1.weight"], state["lins.0.model.1.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="lin0.model.1.weight"):
        load_elatentlpips(tmp_path / "broken.pth")


def test_full_size_kd_pair_probes_and_muon_split():
    """On the meta device (no memory, no compute): the released shapes, probes and parameter split."""
    from moebius.models import get_config, get_family
    from moebius.train._build import feature_probe_name, output_probe_name
    from moebius.train.optim import split_parameters

    with torch.device("meta"):
        student = get_family("moebius").build(get_config("moebius"))
        teacher = get_family("pixelhacker").build(get_config("pixelhacker"))
        x, ids = torch.empty(1, 9, 64, 64), torch.zeros(1, 10, dtype=torch.long)
        s = student(x, torch.tensor([5]), ids, return_block_outputs=True).block_outputs[2]
        t = teacher(x, torch.tensor([5]), ids, return_block_outputs=True).block_outputs[5]
    assert tuple(s.shape) == tuple(t.shape) == (1, 1280, 16, 16)
    assert feature_probe_name(student, 2) == "diff_model.down_blocks.2.attentions.1.proj_out.weight"
    assert output_probe_name(student) == "diff_model.conv_out.conv_pw.weight"
    muon, adamw = split_parameters(student, OptimConfig().adamw_names)
    assert (len(muon), sum(p.numel() for p in muon)) == (288, 225_511_736)
    assert (len(adamw), sum(p.numel() for p in adamw)) == (543, 529_795)
