"""The tone dataset of the training tests, and the demo-diffwave config shrunk to CPU-test size."""
from pathlib import Path

import pytest

from tests.train.conftest import tone_root  # noqa: F401  (a fixture: 10 words x 6 speakers of tones)

TINY_MODEL = {"model.d_model": 8, "model.n_layers": 1, "model.d_state": 8, "model.l_max": 512, "model.embed_in": 8,
              "model.embed_mid": 16, "model.embed_out": 16}


def tiny_diffusion(root: Path, **extra) -> list[str]:
    """demo-diffwave shrunk: an 8-wide model, 512-sample clips, a handful of steps, no progress bar."""
    values = {
        "data.name": "sc09", "data.root": str(root), "data.sample_len": 512, **TINY_MODEL,
        "trainer.batch_size": 4, "trainer.max_steps": 6, "trainer.val_every": 3, "trainer.checkpoint_every": 2,
        "trainer.log_every": 1, "trainer.progress_bar": "false", "trainer.val_batches": 2,
        "schedule.warmup_steps": 2, **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="session")
def tiny():
    return tiny_diffusion
