"""ODE solvers for flow matching, kept apart from the network (as diffusers keeps schedulers apart from models).

A solver integrates dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data) on a uniform grid. It knows nothing of
U-Nets or label maps: `velocity` is any function of (x, t) with t a (B,) tensor.
"""
from __future__ import annotations

from typing import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SOLVERS = ("euler", "heun")


def evaluations(method: str, steps: int) -> int:
    """Network evaluations one sample costs (Heun skips its corrector on the last step, as in EDM)."""
    check_solver(method, steps)
    return steps if method == "euler" else 2 * steps - 1


def check_solver(method: str, steps: int) -> None:
    if method not in SOLVERS:
        raise ValueError(f"unknown ODE solver {method!r}; known: {', '.join(SOLVERS)}")
    if int(steps) < 1:
        raise ValueError(f"the ODE solver needs at least 1 step, got {steps}")


@torch.no_grad()
def solve(velocity: Velocity, x0: torch.Tensor, steps: int, method: str = "heun") -> torch.Tensor:
    """Integrate from t=0 to t=1 in `steps` uniform steps with explicit Euler or Heun's second-order method."""
    check_solver(method, steps)
    x = x0
    grid = torch.linspace(0.0, 1.0, steps + 1, device=x0.device)
    batch = x0.shape[0]
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        dt = t_next - t
        v = velocity(x, t.expand(batch))
        if method == "euler" or i == steps - 1:
            x = x + dt * v
        else:
            x_pred = x + dt * v
            v_next = velocity(x_pred, t_next.expand(batch))
            x = x + dt * 0.5 * (v + v_next)
    return x
