"""The DiffWave model: both backbones, the two-sided S4 kernel, the step embedding, presets, configs, checkpoints.

Parameter counts of the presets (``sashimi presets``): sc09-diffwave 23,476,225 (paper 23.0M),
sc09-diffwave-small 7,736,833 (about 7.5M), sc09-wavenet-diffwave 24,034,305 (paper 24.1M),
sc09-wavenet-diffwave-small 6,807,809, demo-diffwave 620,033.
"""
import copy
import json
import math
import re

import pytest
import torch

import sashimi
from sashimi.errors import ConfigError
from sashimi.models.config import model_config, preset
from sashimi.models.diffwave import DiffWave
from sashimi.models.diffwave_config import DIFFWAVE_PRESETS, DiffWaveConfig
from sashimi.nn.diffusion import sinusoidal_embedding
from sashimi.ssm.s4 import S4

SMALL = dict(d_model=8, n_layers=1, d_state=8, l_max=64, embed_in=8, embed_mid=16, embed_out=16)
SMALL_WAVENET = dict(backbone="wavenet", res_channels=8, skip_channels=6, res_layers=4, dilation_cycle=2,
                     embed_in=8, embed_mid=16, embed_out=16)


def small(**kw) -> DiffWave:
    base = SMALL_WAVENET if kw.get("backbone") == "wavenet" else SMALL
    return DiffWave(DiffWaveConfig.from_dict({"kind": "diffwave", **base, **kw}))


def test_parameter_counts_of_presets():
    count = {name: sum(p.numel() for p in DiffWave(preset(name)).parameters()) for name in DIFFWAVE_PRESETS}
    for name, n in count.items():
        assert preset(name).estimate_parameters() == n, name
    assert count == {"sc09-diffwave": 23_476_225, "sc09-diffwave-small": 7_736_833,
                     "sc09-wavenet-diffwave": 24_034_305, "sc09-wavenet-diffwave-small": 6_807_809,
                     "demo-diffwave": 620_033}
    assert abs(count["sc09-diffwave"] / 23.0e6 - 1) < 0.03  # the SaShiMi paper's DiffWave + SaShiMi
    assert abs(count["sc09-diffwave-small"] / 7.5e6 - 1) < 0.04
    assert abs(count["sc09-wavenet-diffwave"] / 24.1e6 - 1) < 0.01  # DiffWave's (with weight normalisation)


@pytest.mark.parametrize("kw", [{}, {"layer": "s4d"}, {"unet": False}, {"ff": 0, "pool": [2], "expand": 3},
                                {"backbone": "wavenet"}])
def test_size_estimate_is_the_parameter_count(kw):
    model = small(**kw)
    assert model.config.estimate_parameters() == sum(p.numel() for p in model.parameters())


def test_shipped_configs_build_the_presets():
    from sashimi.train import load_config

    for name in DIFFWAVE_PRESETS:
        config = load_config(name)
        assert config.model == preset(name) and config.data.quantization == "none", name


@pytest.mark.parametrize("backbone", ["sashimi", "wavenet"])
def test_shapes_and_the_zero_head_at_init(backbone):
    model = small(backbone=backbone)
    x = torch.randn(3, 100)  # 100: not a multiple of the pools (16), padded inside and cut back
    t = torch.tensor([0, 57, 199])
    y = model(x, t)
    assert y.shape == (3, 100) and torch.equal(y, torch.zeros_like(y))  # training starts from "no noise"
    y.sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.endswith("out.weight") for n in grads)  # only the head can learn first: everything else is 0
    with pytest.raises(ValueError, match=r"diffusion steps must lie in \[0, 200\)"):
        model(x, torch.tensor([0, 1, 200]))
    with pytest.raises(ValueError, match="integer steps"):
        model(x, torch.zeros(3))


def _perturbed(model):
    """After its head is made nonzero: the change of the output at t = 20 when the input at t = 40 changes."""
    torch.nn.init.normal_(model.backbone.out.weight)
    x = torch.randn(2, 64, dtype=torch.float64, requires_grad=True)
    model.double()(x, torch.tensor([3, 150]))[:, 20].sum().backward()
    return x.grad[:, 21:].abs().sum(), x.grad[:, :20].abs().sum()


@pytest.mark.parametrize("backbone", ["sashimi", "wavenet"])
def test_the_output_at_t_depends_on_inputs_after_t(backbone):
    after, before = _perturbed(small(backbone=backbone))
    assert after > 1e-6 and before > 1e-6


def test_the_two_sided_kernel_is_one_noncausal_convolution():
    """S4(bidirectional) = D u + causal conv with k0 + strictly anti-causal conv with k1, written out plainly;
    k0 and k1 share A, P, B, dt and differ in C alone: k1 is the kernel of the same SSM with C[1]."""
    torch.manual_seed(1)
    H, N, L = 3, 8, 24
    layer = S4(H, N, bidirectional=True, l_max=L).double()
    u = torch.randn(2, H, L, dtype=torch.float64)
    k = layer.kernel(L)  # (2 H L)
    expected = torch.zeros_like(u)
    for t in range(L):
        expected[..., t] = layer.D * u[..., t]
        for j in range(t + 1):  # the past and present, forward kernel
            expected[..., t] += k[0, :, j] * u[..., t - j]
        for j in range(L - 1 - t):  # the strict future, backward kernel
            expected[..., t] += k[1, :, j] * u[..., t + 1 + j]
    assert torch.allclose(layer._ssm(u), expected, rtol=1e-10, atol=1e-12)

    one_sided = S4(H, N, l_max=L).double()
    with torch.no_grad():
        for name, p in one_sided.kernel.named_parameters():
            p.copy_(getattr(layer.kernel, name)[1:] if name == "C" else getattr(layer.kernel, name))
    assert torch.allclose(one_sided.kernel(L)[0], k[1], rtol=1e-10, atol=1e-12)
    assert {n for n, p in layer.kernel.named_parameters() if p.shape[0] == 2} == {"C"}


def test_sinusoidal_embedding_is_diffwaves():
    t = torch.tensor([0, 7, 199])
    e = sinusoidal_embedding(t, 128)
    j = 5
    assert e.shape == (3, 128)
    assert math.isclose(float(e[1, j]), math.sin(7 * 10 ** (-4 * j / 63)), rel_tol=1e-5)
    assert math.isclose(float(e[1, 64 + j]), math.cos(7 * 10 ** (-4 * j / 63)), rel_tol=1e-5)


def test_a_training_step_lowers_the_loss_on_a_fixed_batch():
    from sashimi.diffusion.loss import denoising_loss, example_generator

    torch.manual_seed(0)
    model = small()
    x0 = 0.5 * torch.sin(torch.arange(256) / 5.0).repeat(4, 1)  # (4, 256)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = denoising_loss(model, x0, [example_generator(0, i) for i in range(4)])  # same t and noise
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("backbone", ["sashimi", "wavenet"])
def test_checkpoint_round_trip_keeps_the_kind(backbone, tmp_path):
    model = small(backbone=backbone).eval()
    torch.nn.init.normal_(model.backbone.out.weight)
    sashimi.save_model(model, tmp_path / "m")
    header = json.loads((tmp_path / "m" / "config.json").read_text())
    assert header["kind"] == "diffwave" and header["config"]["kind"] == "diffwave"
    assert header["config"]["backbone"] == backbone
    assert ("res_channels" in header["config"]) == (backbone == "wavenet")  # only the chosen backbone's fields
    loaded = sashimi.load_model(tmp_path / "m")
    assert isinstance(loaded, DiffWave) and loaded.config == model.config
    x, t = torch.randn(2, 32), torch.tensor([4, 100])
    assert torch.equal(loaded(x, t), model(x, t))


def test_an_autoregressive_checkpoint_without_kind_loads_as_ar(tmp_path):
    from safetensors.torch import save_file

    lm = sashimi.SaShiMiLM(preset("tiny", n_layers=1, d_model=8, d_state=8, l_max=64))
    config = lm.config.to_dict()
    assert config.pop("kind") == "ar"  # as written before model kinds existed
    header = {"format_version": 1, "kind": "lm", "config": config}
    save_file(dict(lm.state_dict()), tmp_path / "old.safetensors", metadata={"sashimi": json.dumps(header)})
    loaded = sashimi.load_model(tmp_path / "old.safetensors")
    assert isinstance(loaded, sashimi.SaShiMiLM) and loaded.config.kind == "ar"


@pytest.mark.parametrize("section, message", [
    ({"kind": "diffwave", "bits": 8}, "model.bits is an option of autoregressive models (model.kind: ar)"),
    ({"kind": "diffwave", "quantization": "mu-law"}, "model.quantization is an option of autoregressive models"),
    ({"backbone": "sashimi"}, "model.backbone is an option of diffusion models (model.kind: diffwave)"),
    ({"kind": "ar", "diffusion_steps": 50}, "model.diffusion_steps is an option of diffusion models"),
    ({"kind": "diffwave", "res_channels": 64}, "model.res_channels is an option of the wavenet backbone, and "
                                               "model.backbone is sashimi"),
    ({"kind": "diffwave", "backbone": "wavenet", "d_model": 64}, "model.d_model is an option of the sashimi backbone"),
    ({"kind": "diffusion"}, "model.kind must be one of ar, diffwave; got 'diffusion'"),
    ({"kind": "diffwave", "backbone": "unet"}, "model.backbone must be one of sashimi, wavenet; got 'unet'"),
    ({"kind": "diffwave", "beta_end": 1.5}, "0 < beta_start <= beta_end < 1"),
    ({"kind": "diffwave", "diffusion_steps": 0}, "model.diffusion_steps must be >= 1"),
    ({"kind": "diffwave", "embed_in": 7}, "model.embed_in must be an even number"),
    ({"kind": "diffwave", "res_layer": 3}, "model: unknown key(s) ['res_layer']"),
])
def test_config_errors_are_one_clear_line(section, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        model_config(section)
    assert "\n" not in str(err.value)


def test_to_dict_round_trips_both_backbones():
    for name in DIFFWAVE_PRESETS:
        cfg = preset(name)
        assert model_config(cfg.to_dict()) == cfg


def test_cached_kernels_give_the_same_output_and_never_go_stale():
    from sashimi.ssm.s4 import cached_kernels

    model = small().eval()
    torch.nn.init.normal_(model.backbone.out.weight)
    x, t = torch.randn(2, 64), torch.tensor([3, 90])
    with torch.no_grad():
        plain = model(x, t)
        with cached_kernels(model):
            assert torch.equal(model(x, t), plain) and torch.equal(model(x, t), plain)
            layer = model.backbone.center[0].layer
            assert list(layer._kernel_cache) == [4]  # 64 samples pooled by 4 and 4
            layer.kernel.log_dt.add_(0.5)  # a parameter changes: the kernel is computed again
            changed = model(x, t)
        assert layer._kernel_cache is None and torch.equal(model(x, t), changed)
    assert not torch.equal(changed, plain)
    with torch.no_grad(), cached_kernels(model):
        model(x, t)
        copied = copy.deepcopy(model)  # a copy made inside the block does not keep caching after it
    assert all(m._kernel_cache is None for m in copied.modules() if isinstance(m, S4))
