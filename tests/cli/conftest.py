"""A tiny autoregressive checkpoint on disk, as the generation CLI tests use it."""
import pytest
import torch

import sashimi

SR = 8000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = sashimi.preset("tiny", d_model=8, d_state=8, n_layers=1, l_max=64, sample_rate=SR)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    sashimi.save_model(sashimi.SaShiMiLM(cfg).eval(), path)
    return path
