import math

import pytest
import torch

from sashimi.audio.quantize import LinearQuantizer, MuLawQuantizer, make_quantizer
from sashimi.errors import AudioError, ConfigError

BITS = [2, 3, 8, 12, 16]


@pytest.mark.parametrize("cls", [MuLawQuantizer, LinearQuantizer])
@pytest.mark.parametrize("bits", BITS)
def test_encode_decode_is_identity_on_every_token(cls, bits):
    q = cls(bits)
    tokens = torch.arange(q.n_classes)
    wave = q.decode(tokens)
    assert wave.dtype == torch.float32 and wave.min() >= -1 and wave.max() <= 1
    assert torch.equal(q.encode(wave), tokens)


@pytest.mark.parametrize("bits", BITS)
def test_mulaw_error_bounded_by_local_step(bits):
    q = MuLawQuantizer(bits)
    x = torch.cat([torch.linspace(-1, 1, 20001), torch.tensor([0.0, 1e-6, -1e-6])]).double()
    t = q.encode(x)
    assert t.dtype == torch.long and t.min() >= 0 and t.max() < q.n_classes
    # token t covers companded values y in [y_t - 1/mu, y_t + 1/mu]; map those bin edges back to amplitudes
    mu = q.n_classes - 1

    def expand(y):
        return torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu

    y_t = 2.0 * t.double() / mu - 1.0
    lo, hi = expand((y_t - 1.0 / mu).clamp(-1, 1)), expand((y_t + 1.0 / mu).clamp(-1, 1))
    assert bool(((x >= lo - 1e-9) & (x <= hi + 1e-9)).all())
    err = (q.decode(t).double() - x).abs()
    assert bool((err <= torch.maximum(hi - expand(y_t), expand(y_t) - lo) + 1e-6).all())
    # and never more than one full step between neighbouring levels
    levels = q.decode(torch.arange(q.n_classes)).double()
    assert float(err.max()) <= float((levels[1:] - levels[:-1]).max())


@pytest.mark.parametrize("bits", BITS)
def test_linear_error_at_most_half_a_bin(bits):
    q = LinearQuantizer(bits)
    x = torch.linspace(-1, 1, 20001)
    err = (q.decode(q.encode(x)) - x).abs()
    assert float(err.max()) <= 1.0 / q.n_classes + 1e-6


def test_mulaw_8bit_known_values_and_shape():
    q = MuLawQuantizer()
    assert q.bits == 8 and q.n_classes == 256
    x = torch.tensor([[-1.0, 0.0, 1.0], [2.0, -3.0, 0.5]])
    t = q.encode(x)
    assert t.shape == (2, 3)
    assert t.tolist()[0] == [0, 128, 255]  # round(127.5) = 128 (round half to even is 128)
    assert t[1, 0] == 255 and t[1, 1] == 0  # out of range values clamp
    # mu-law spends more levels near zero than linear
    small = torch.linspace(-0.01, 0.01, 1001)
    assert len(q.encode(small).unique()) > len(LinearQuantizer(8).encode(small).unique())


def test_make_quantizer_and_errors():
    assert isinstance(make_quantizer("mu-law", 8), MuLawQuantizer)
    assert make_quantizer("linear", 10).n_classes == 1024
    with pytest.raises(ConfigError, match="quantization must be one of mu-law, linear; got 'mulaw'"):
        make_quantizer("mulaw", 8)
    for bits in (1, 17, 8.0, True):
        with pytest.raises(ConfigError, match="bits must be an integer in 2..16"):
            MuLawQuantizer(bits)
    with pytest.raises(AudioError, match="NaN"):
        MuLawQuantizer().encode(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ConfigError, match=r"tokens must lie in \[0, 256\)"):
        MuLawQuantizer().decode(torch.tensor([256]))
    with pytest.raises(ConfigError, match="integer tokens"):
        LinearQuantizer().decode(torch.tensor([1.0]))


@pytest.mark.parametrize("cls", [MuLawQuantizer, LinearQuantizer])
def test_numpy_and_tensor_paths_agree(cls):
    q = cls(8)
    x = torch.linspace(-1.2, 1.2, 1001, dtype=torch.float32)
    assert torch.equal(q.encode(x), torch.from_numpy(q.encode_array(x.numpy())))
    t = torch.arange(256)
    assert torch.equal(q.decode(t), torch.from_numpy(q.decode_array(t.numpy())))
    assert q.encode(x.double()).dtype == torch.long and repr(q) == f"{cls.__name__}(bits=8)"
