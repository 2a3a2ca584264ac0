import os
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "official_sashimi_small.pt"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def reference_path() -> Path:
    path = Path(os.environ.get("SASHIMI_REFERENCE", REFERENCE))
    if not path.exists():
        pytest.fail(f"reference fixture missing: {path} (set SASHIMI_REFERENCE)")
    return path


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def unroll(module, x: torch.Tensor):
    """Step ``module`` over x (B L ...) from its default state: (outputs stacked on dim 1, final state)."""
    state = module.default_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = module.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state
