import pytest
import torch

from sashimi.data import ResumableSampler, collate_tokens, epoch_permutation
from sashimi.errors import ConfigError


def test_permutation_depends_only_on_seed_and_epoch():
    a = ResumableSampler(100, seed=7)
    b = ResumableSampler(100, seed=7)
    assert list(a) == list(b) == epoch_permutation(100, 7, 0).tolist()
    assert sorted(a) == list(range(100))
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(ResumableSampler(100, seed=8)) != list(b)
    assert list(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_resume_at_exact_position_is_one_shot():
    s = ResumableSampler(50, seed=1)
    s.set_epoch(4)
    full = list(s)
    s.set_start(17)
    assert len(s) == 33
    state = s.state_dict()
    t = ResumableSampler(50, seed=0)
    t.load_state_dict(state)
    assert list(t) == full[17:]
    assert list(t) == full and len(t) == 50  # the offset applied once
    with pytest.raises(ConfigError, match="start must be in \\[0, 50\\]"):
        s.set_start(51)


def test_sharding_over_ranks():
    shards = [list(ResumableSampler(10, seed=2, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(x) == 3 for x in shards)
    assert len(set(sum(shards, []))) == 9
    with pytest.raises(ConfigError, match="rank must be in"):
        ResumableSampler(10, num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match="non-empty"):
        ResumableSampler(0)


def test_collate_tokens_pads_and_reports_lengths():
    tokens, lengths = collate_tokens([torch.tensor([1, 2, 3]), torch.tensor([4])])
    assert tokens.tolist() == [[1, 2, 3], [4, 0, 0]] and lengths.tolist() == [3, 1]
