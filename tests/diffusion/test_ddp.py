"""DDP on two CPU processes trains the diffusion model exactly as one process with the whole global batch: every
example's diffusion step and noise come from its stream position, whichever process takes it."""
import subprocess
import sys

import pytest
import torch

import sashimi
from sashimi.train.logs import read_metrics

from .conftest import tiny_diffusion


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process_on_the_same_global_batch(tone_root, tmp_path):
    over = tiny_diffusion(tone_root, **{"trainer.precision": "64-true", "trainer.max_steps": 3, "trainer.val_every": 3,
                                        "trainer.accelerator": "cpu",
                                        "trainer.val_batch_size": "null"})  # both runs validate the same clips

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "sashimi", "train", "demo-diffwave", *over, *args],
                              capture_output=True, text=True, timeout=600)

    one = cli("trainer.batch_size=4", "--run-dir", str(tmp_path / "one"))
    two = cli("trainer.batch_size=2", "trainer.devices=2", "--run-dir", str(tmp_path / "two"))
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert "distributed_backend=gloo" in two.stderr
    m1, m2 = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for key in ("train/loss", "val/loss", "val/loss_t000_050", "val/loss_t150_200"):
        assert [s for s, _ in m1[key]] == [s for s, _ in m2[key]], key
        assert [v for _, v in m1[key]] == pytest.approx([v for _, v in m2[key]], rel=1e-10, abs=0), key
    a, b = sashimi.load_model(tmp_path / "one" / "model"), sashimi.load_model(tmp_path / "two" / "model")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, rtol=1e-10, atol=1e-12), name
