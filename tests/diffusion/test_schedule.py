"""The forward process and the posterior of the DDPM schedule against their definitions, computed independently:
x_t by iterating the one-step process, and q(x_{t-1} | x_t, x0) by Bayes' rule on the two Gaussians."""
import math

import pytest
import torch

from sashimi.diffusion.schedule import Schedule
from sashimi.errors import ConfigError

T, BETA_START, BETA_END = 200, 1e-4, 0.02


def plain_betas() -> list[float]:
    return [BETA_START + (BETA_END - BETA_START) * t / (T - 1) for t in range(T)]


def plain_alpha_bar() -> list[float]:
    out, prod = [], 1.0
    for b in plain_betas():
        prod *= 1 - b
        out.append(prod)
    return out


def test_linear_schedule_is_diffwaves():
    s = Schedule.linear(T, BETA_START, BETA_END)
    assert s.T == T and torch.allclose(s.betas, torch.tensor(plain_betas(), dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(s.alpha_bar, torch.tensor(plain_alpha_bar(), dtype=torch.float64), rtol=1e-12)
    assert s.alpha_bar_prev[0] == 1 and torch.equal(s.alpha_bar_prev[1:], s.alpha_bar[:-1])
    assert 0.13 < float(s.alpha_bar[-1]) < 0.14  # what is left of the signal after T steps: sqrt(0.134) = 0.37


@pytest.mark.parametrize("t", [0, 1, 49, 120, 199])
def test_q_sample_has_the_closed_form_mean_and_variance(t):
    """Analytically: q_mean_std are sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t). Empirically: iterating
    x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) z from a fixed x0 gives those moments too (50k draws, 5 SE)."""
    s = Schedule.linear(T, BETA_START, BETA_END)
    x0 = torch.tensor([[0.7, -0.3]], dtype=torch.float64).repeat(50_000, 1)  # (N, 2): two data values
    steps = torch.full((len(x0),), t)
    mean, std = s.q_mean_std(steps, x0)
    ab = plain_alpha_bar()[t]
    assert torch.allclose(mean, torch.full_like(mean, math.sqrt(ab)), rtol=1e-12)
    assert torch.allclose(std, torch.full_like(std, math.sqrt(1 - ab)), rtol=1e-12)

    g = torch.Generator().manual_seed(t)
    x = x0.clone()
    for beta in plain_betas()[: t + 1]:
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    n, var = len(x), 1 - ab
    assert (x.mean(0) - math.sqrt(ab) * x0[0]).abs().max() < 5 * math.sqrt(var / n)
    assert (x.var(0) / var - 1).abs().max() < 5 * math.sqrt(2 / n)

    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    direct = s.q_sample(x0, steps, eps)
    assert torch.allclose(direct, math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps, rtol=1e-12)
    assert torch.allclose(s.predict_x0(direct, steps, eps), x0, rtol=1e-10, atol=1e-12)


def test_posterior_is_bayes_rule_on_the_two_gaussians():
    """prior q(x_{t-1} | x0) = N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}), likelihood q(x_t | x_{t-1}) = N(sqrt(1 - b_t)
    x_{t-1}, b_t): the posterior precision is the sum of precisions, its mean the precision-weighted means."""
    s = Schedule.linear(T, BETA_START, BETA_END)
    betas, ab = plain_betas(), plain_alpha_bar()
    x0 = torch.tensor([0.4, -0.9, 0.05], dtype=torch.float64)
    x_t = torch.tensor([1.3, 0.2, -0.7], dtype=torch.float64)
    for t in range(1, T):
        prior_mean, prior_var = math.sqrt(ab[t - 1]) * x0, 1 - ab[t - 1]
        a, noise_var = math.sqrt(1 - betas[t]), betas[t]
        precision = 1 / prior_var + a * a / noise_var
        mean = (prior_mean / prior_var + a * x_t / noise_var) / precision
        steps = torch.full((3,), t)
        got_mean = s.posterior_mean(x0[:, None], x_t[:, None], steps)[:, 0]
        got_var = s.posterior_variance(steps, x0[:, None])[:, 0]
        assert torch.allclose(got_mean, mean, rtol=1e-10, atol=1e-13), t
        assert torch.allclose(got_var, torch.full_like(got_var, 1 / precision), rtol=1e-10), t
    zero = torch.zeros(3, dtype=torch.long)  # before step 0 is the data itself: mean x0, no variance
    assert torch.allclose(s.posterior_mean(x0[:, None], x_t[:, None], zero)[:, 0], x0, rtol=1e-12)
    assert torch.all(s.posterior_variance(zero, x0[:, None]) == 0)


def test_coefficients_follow_the_tensor_they_multiply():
    s = Schedule.linear(T, BETA_START, BETA_END)
    x = torch.zeros(2, 5, 3, dtype=torch.float32)
    mean, std = s.q_mean_std(torch.tensor([0, 199]), x)
    assert mean.shape == (2, 1, 1) and mean.dtype == torch.float32 and float(std[1]) > float(std[0])


@pytest.mark.parametrize("steps, start, end", [(0, 1e-4, 0.02), (10, 0.0, 0.02), (10, 0.03, 0.02), (10, 1e-4, 1.0)])
def test_bad_schedules_are_refused(steps, start, end):
    with pytest.raises(ConfigError, match="diffusion schedule needs"):
        Schedule.linear(steps, start, end)
