"""Every layer configuration the model accepts, through every CPU backend of the recurrent step, against the
reference ``SaShiMiLM.step`` (``backends.ReferenceStep``): the same logits for the same teacher-forced tokens, or
a refusal at set-up (a fallback with a RuntimeWarning that names the reason), never a different distribution.

Large dt (dt_min 0.1, dt_max 0.5) so that a wrong discretization shows (with dt ~ 0.001 bilinear and ZOH agree
to 1e-7). The inductor backend compiles one graph per step depth (seconds each): three configurations are in the
quick run, the others are marked slow.
"""
import warnings

import pytest
import torch

import sashimi
from sashimi.generation import make_step, native
from sashimi.generation.backends import ReferenceStep

CONFIGS = [  # (layer, disc, init, unet, pool, bits)
    ("s4", "bilinear", "legs", False, (4, 4), 8),
    ("s4", "zoh", "legs", False, (4, 4), 8),
    ("s4", "bilinear", "legt", True, (2, 3), 8),  # rank 2
    ("s4", "zoh", "legt", False, (4,), 4),
    ("s4", "bilinear", "fout", False, (), 4),  # rank 2, no pooling
    ("s4d", "zoh", "legs", False, (4, 4), 8),
    ("s4d", "bilinear", "legs", True, (4, 4), 8),
    ("s4d", "zoh", "inv", False, (3,), 4),
    ("s4d", "zoh", "lin", True, (2, 2), 8),
]
IDS = ["-".join(str(x) for x in c) for c in CONFIGS]
QUICK_INDUCTOR = {IDS[0], IDS[1], IDS[6]}
INDUCTOR = [pytest.param(c, id=i, marks=() if i in QUICK_INDUCTOR else pytest.mark.slow) for c, i in zip(CONFIGS, IDS)]


def _model(layer, disc, init, unet, pool, bits):
    torch.manual_seed(0)
    cfg = sashimi.preset("tiny", layer=layer, disc=disc, init=init, unet=unet, pool=pool, bits=bits, d_model=8,
                         d_state=8, n_layers=1, l_max=64, dt_min=0.1, dt_max=0.5)
    return sashimi.SaShiMiLM(cfg).eval()


def _check(config, backend):
    model = _model(*config)
    tokens = torch.randint(0, model.n_classes, (3, 40))
    bos = torch.full((3, 1), model.bos)
    inputs = torch.cat([bos, tokens[:, :-1]], dim=1).T  # (n B)
    with torch.no_grad():
        want = ReferenceStep(model, 3, sashimi.generation.SamplingSettings()).forced(inputs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step = make_step(model, 3, backend=backend)
        got = step.forced(inputs)
    if step.backend != backend:  # refused: it must say why, and the step that runs instead must be right
        assert any("unavailable" in str(w.message) for w in caught), [str(w.message) for w in caught]
    torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)
    return step.backend


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize("backend", ["eager", "native"])
def test_every_configuration_steps_like_the_reference(config, backend):
    if backend == "native" and not native.available():
        pytest.fail("the native step did not build")
    ran = _check(config, backend)
    dense = config[0] == "s4" and config[1] == "zoh"
    assert ran == ("inductor" if backend == "native" and dense else backend)  # ZOH DPLR: refused by native


@pytest.mark.parametrize("config", INDUCTOR)
def test_every_configuration_compiled_steps_like_the_reference(config):
    assert _check(config, "inductor") == "inductor"
