"""The samplers with an exact noise oracle on a Gaussian toy problem: data ~ N(MU, S^2) in every sample.

For Gaussian data, x_t ~ N(m mu, m^2 s^2 + 1 - m^2) with m = sqrt(alpha_bar_t), and the optimal noise predictor
is E[eps | x_t] = sqrt(1 - m^2) (x_t - m mu) / (m^2 s^2 + 1 - m^2). Each sampler step is then linear in x_t, so
the output of a whole chain started from N(0, 1) is Gaussian with moments the test computes by a plain scalar
recursion (independently of the sampler code). The empirical moments must match them to sampling error, and
they are close to the data's: the two differ because T is finite (q(x_T | x0) still holds sqrt(alpha_bar_T) =
0.37 of the signal while sampling starts from N(0, 1)) and because DDPM uses the posterior variance beta~.
"""
import math

import pytest
import torch

from sashimi.diffusion.samplers import SeededNoise, ddim_sample, ddim_steps, ddpm_sample
from sashimi.diffusion.schedule import Schedule
from sashimi.errors import ConfigError

MU, S = 0.2, 0.3
T, ROWS, LENGTH = 200, 2, 50_000  # 100,000 independent samples


def alpha_bar() -> list[float]:
    out, prod = [], 1.0
    for t in range(T):
        prod *= 1 - (1e-4 + (0.02 - 1e-4) * t / (T - 1))
        out.append(prod)
    return out


AB = alpha_bar()


def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact E[eps | x_t] for the Gaussian data, row by row: x (B L), t (B,)."""
    ab = torch.tensor([AB[int(s)] for s in t], dtype=torch.float64)[:, None]
    var = ab * S * S + 1 - ab
    return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * MU) / var).to(x.dtype)


def chain_moments(visit: list[int], ancestral: bool) -> tuple[float, float]:
    """Mean and variance of the sampler output under the oracle, from N(0, 1) at visit[0] (plain recursion)."""
    mean, var = 0.0, 1.0
    for k, t in enumerate(visit):
        m, sd = math.sqrt(AB[t]), math.sqrt(1 - AB[t])
        v = m * m * S * S + sd * sd
        x0_a, x0_b = (1 - sd * sd / v) / m, sd * sd * MU / v  # x0^ = x0_a x_t + x0_b
        eps_a, eps_b = sd / v, -sd * m * MU / v  # eps = eps_a x_t + eps_b
        if ancestral:  # posterior mean and variance, as textbook formulas
            ab_prev = AB[t - 1] if t > 0 else 1.0
            beta = 1 - AB[t] / ab_prev
            c0, ct = math.sqrt(ab_prev) * beta / (1 - AB[t]), math.sqrt(1 - beta) * (1 - ab_prev) / (1 - AB[t])
            a, b, noise = c0 * x0_a + ct, c0 * x0_b, (1 - ab_prev) / (1 - AB[t]) * beta
        elif k + 1 < len(visit):  # DDIM: x0^ and eps put back at the next step of the subsequence
            mp, sp = math.sqrt(AB[visit[k + 1]]), math.sqrt(1 - AB[visit[k + 1]])
            a, b, noise = mp * x0_a + sp * eps_a, mp * x0_b + sp * eps_b, 0.0
        else:
            a, b, noise = x0_a, x0_b, 0.0
        mean, var = a * mean + b, a * a * var + noise
    return mean, var


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_exact_oracle_recovers_the_gaussian_data(sampler):
    schedule = Schedule.linear(T, 1e-4, 0.02)
    noise = SeededNoise([11, 12], dtype=torch.float64)
    if sampler == "ddpm":
        x = ddpm_sample(oracle, schedule, noise, LENGTH)
        mean, var = chain_moments(list(reversed(range(T))), ancestral=True)
    else:
        x = ddim_sample(oracle, schedule, noise, LENGTH, steps=50)
        mean, var = chain_moments(ddim_steps(T, 50), ancestral=False)
    n = x.numel()
    assert x.shape == (ROWS, LENGTH)
    # the sampler does what its formulas say: empirical = exact moments of the chain, within 5 standard errors
    assert abs(float(x.mean()) - mean) < 5 * math.sqrt(var / n)
    assert abs(float(x.var()) / var - 1) < 5 * math.sqrt(2 / n)
    # and the chain recovers the data: mean within 0.005 (DDPM) / 0.025 (DDIM: its deterministic map keeps more
    # of the mismatch of the N(0, 1) start), standard deviation within 3%
    assert abs(mean - MU) < (0.005 if sampler == "ddpm" else 0.025)
    assert abs(math.sqrt(var) / S - 1) < 0.03


def test_ddim_is_deterministic_given_the_start():
    schedule = Schedule.linear(T, 1e-4, 0.02)
    a = ddim_sample(oracle, schedule, SeededNoise([5]), 100, steps=10)
    b = ddim_sample(oracle, schedule, SeededNoise([5]), 100, steps=10)
    assert torch.equal(a, b)


def test_a_rows_noise_depends_on_its_seed_alone():
    alone = SeededNoise([7]).normal(64)
    together = SeededNoise([3, 7, 9]).normal(64)
    assert torch.equal(together[1], alone[0]) and not torch.equal(together[0], together[1])


def test_ddim_subsequence():
    assert ddim_steps(200, 200) == list(range(199, -1, -1))
    steps = ddim_steps(200, 50)
    assert len(steps) == 50 and steps[0] == 199 and steps[-1] == 0 and steps == sorted(steps, reverse=True)
    assert ddim_steps(200, 1) == [199]
    for bad in (0, 201):
        with pytest.raises(ConfigError, match=r"DDIM steps must be in 1..200"):
            ddim_steps(200, bad)


def test_samplers_call_back_once_per_network_evaluation():
    schedule = Schedule.linear(20, 1e-4, 0.05)
    calls = []
    ddpm_sample(lambda x, t: torch.zeros_like(x), schedule, SeededNoise([0]), 8, on_step=lambda: calls.append(1))
    ddim_sample(lambda x, t: torch.zeros_like(x), schedule, SeededNoise([0]), 8, 4, on_step=lambda: calls.append(2))
    assert calls.count(1) == 20 and calls.count(2) == 4
