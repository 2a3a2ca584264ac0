import pytest
import torch

import sashimi


def small_model(layer: str = "s4", unet: bool = False, seed: int = 0, pool=(4, 4)) -> sashimi.SaShiMiLM:
    """A very small LM (two tiers of pooling by default) that builds in well under a second."""
    torch.manual_seed(seed)
    cfg = sashimi.preset("tiny", layer=layer, unet=unet, d_model=8, d_state=8, n_layers=1, l_max=64, pool=pool)
    return sashimi.SaShiMiLM(cfg).eval()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
