"""The ODE solvers and the DDPM/DDIM schedule against closed-form answers."""
from __future__ import annotations

import math

import pytest
import torch

from generators import solvers
from generators.schedules import NoiseSchedule, ddim_step, ddim_timesteps


def test_a_constant_velocity_is_integrated_exactly():
    """The rectified-flow ideal: a straight path from x0 to x1 has velocity x1 - x0, exact in one step."""
    x0, x1 = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for method in solvers.SOLVERS:
        out = solvers.solve(lambda x, t: x1 - x0, x0, steps=1, method=method)
        torch.testing.assert_close(out, x1)


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_convergence_order_on_exponential_growth(method, order):
    """dx/dt = x from x(0)=1: x(1) = e. Halving the step divides the error by 2**order."""
    x0 = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    errors = [abs(float(solvers.solve(lambda x, t: x, x0, steps=n, method=method)) - math.e) for n in (8, 16)]
    assert errors[0] / errors[1] == pytest.approx(2 ** order, rel=0.15)


def test_time_runs_from_zero_to_one():
    seen = []
    solvers.solve(lambda x, t: (seen.append(float(t[0])), torch.zeros_like(x))[1], torch.zeros(2, 1, 2, 2), 4,
                  "euler")
    assert seen == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_network_evaluations_and_bad_solvers():
    assert solvers.evaluations("euler", 16) == 16 and solvers.evaluations("heun", 8) == 15
    with pytest.raises(ValueError, match="unknown ODE solver"):
        solvers.check_solver("rk45", 4)
    with pytest.raises(ValueError, match="at least 1 step"):
        solvers.check_solver("heun", 0)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_goes_from_signal_to_noise(kind):
    s = NoiseSchedule(kind, 1000)
    abar = s.alpha_bar
    assert abar[0] > 0.99 and abar[-1] < 0.01
    assert bool((abar[1:] <= abar[:-1]).all())


def test_ddim_with_the_true_noise_recovers_the_image():
    """If the network predicted the exact noise, DDIM (eta=0) would return x0 from any timestep in one step."""
    s = NoiseSchedule("cosine", 1000)
    x0 = torch.rand(2, 1, 8, 8) * 1.6 - 0.8
    noise = torch.randn(2, 1, 8, 8)
    t = 600
    x_t = s.add_noise(x0, noise, torch.full((2,), t))
    torch.testing.assert_close(ddim_step(s, x_t, noise, t, -1), x0, atol=1e-4, rtol=1e-4)
    # and to an intermediate step it lands exactly on the forward process at t_prev with the same noise
    torch.testing.assert_close(ddim_step(s, x_t, noise, t, 200), s.add_noise(x0, noise, torch.full((2,), 200)),
                               atol=1e-4, rtol=1e-4)


def test_ddim_timesteps():
    s = NoiseSchedule("linear", 1000)
    ts = ddim_timesteps(s, 4)
    assert ts == [999, 749, 499, 249]
    with pytest.raises(ValueError, match="DDIM steps"):
        ddim_timesteps(s, 0)
