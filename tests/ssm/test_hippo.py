import pytest
import torch

from sashimi.errors import ConfigError
from sashimi.ssm.hippo import nplr, transition
from sashimi.ssm.init import diag_init, dplr_init


@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
@pytest.mark.parametrize("N", [8, 64])
def test_nplr_reconstructs_hippo(measure, N):
    W, P, B, V = nplr(measure, N, B_clip=None)
    full = lambda x: torch.cat([x, x.conj()], dim=-1)
    Vf = torch.cat([V, V.conj()], dim=1)
    A = Vf @ (torch.diag(full(W)) - full(P).T @ full(P).conj()) @ Vf.conj().T
    A_ref, B_ref = transition(measure, N)
    assert (A - A_ref).abs().max() < 1e-9 * max(1.0, A_ref.abs().max().item())
    assert (Vf @ full(B) - B_ref).abs().max() < 1e-9 * B_ref.abs().max()
    assert torch.allclose(Vf.conj().T @ Vf, torch.eye(N, dtype=Vf.dtype), atol=1e-10)  # unitary


def test_legs_spectrum_and_inits():
    W, P, B = dplr_init("legs", 16)
    assert torch.allclose(W.real, torch.full((8,), -0.5, dtype=torch.float64))
    assert (W.imag <= 0).all() and P.shape == (1, 8)
    assert dplr_init("legt", 16)[1].shape == (2, 8)  # LegT needs rank 2
    for init in ["legs", "inv", "lin"]:
        W, B = diag_init(init, 16)
        assert W.shape == B.shape == (8,) and (W.real < 0).all()


def test_bad_inits_are_clear():
    with pytest.raises(ConfigError, match="unknown init 'foo'"):
        dplr_init("foo", 8)
    with pytest.raises(ConfigError, match="unknown init"):
        diag_init("legt", 8)
    with pytest.raises(ConfigError, match="even"):
        nplr("legs", 7)
