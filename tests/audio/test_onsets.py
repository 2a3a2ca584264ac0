"""A word's onset in a token clip and the loss weights around it."""
import numpy as np
import torch

from sashimi.audio.onsets import LOUD, loud_tokens, onset_weights, onsets
from sashimi.audio.quantize import make_quantizer


def clips(quantizer) -> torch.Tensor:
    """(3 20) tokens: a quiet start at 8 and a loud sample at 12; silence; loud from the first sample."""
    waves = np.zeros((3, 20), np.float32)
    waves[0, 8], waves[0, 12], waves[0, 15] = LOUD / 4, 0.5, -0.3
    waves[2, :] = 0.4
    return torch.from_numpy(quantizer.encode_array(waves)).long()


def test_the_onset_is_the_first_sample_above_loud_in_either_quantization():
    for kind in ("mu-law", "linear"):
        q = make_quantizer(kind, 8)
        loud = loud_tokens(q)
        assert loud.shape == (256,) and not loud[q.encode_array(np.zeros(1))[0]]
        index, found = onsets(clips(q), loud)
        assert index.tolist() == [12, 0, 0] and found.tolist() == [True, False, True]


def test_onset_weights_cover_the_window_before_and_after_and_spare_clips_without_one():
    q = make_quantizer("mu-law", 8)
    w = onset_weights(clips(q), loud_tokens(q), before=4, after=2, weight=8.0)  # (3 20)
    assert w[0].nonzero().numel() == 20 and torch.equal((w[0] == 8).nonzero()[:, 0], torch.arange(8, 14))
    assert torch.equal(w[1], torch.ones(20))  # silence: no onset, plain weights
    assert torch.equal((w[2] == 8).nonzero()[:, 0], torch.arange(0, 2))  # clipped at the clip's start
