"""A conditional model (``model.labels``): trained from an unconditional one, evaluated, packaged with a card set
that carries labels, and generated from by label."""
import json

import pytest
import torch

import sashimi
from sashimi.cli.main import main
from sashimi.train import load_config, train
from sashimi.train.evaluate import evaluate_checkpoint
from sashimi.train.package import card_set_score, load_card_set

DIGITS = "[zero,one,two,three,four,five,six,seven,eight,nine]"


@pytest.fixture(scope="module")
def runs(tone_root, tmp_path_factory):
    from tests.train.conftest import tiny_overrides

    tmp = tmp_path_factory.mktemp("labels")
    over = tiny_overrides(tone_root, **{"trainer.max_steps": 1, "trainer.precision": "64-true"})
    source = train(load_config("demo", over), tmp / "source")
    warm = over + [f"trainer.init_from={source}", f"model.labels={DIGITS}"]
    frozen = train(load_config("demo", warm + ["optim.lr=1e-30", "model.ssm_lr=1e-30"]), tmp / "frozen")
    trained = train(load_config("demo", warm + ["trainer.max_steps=3", "optim.lr=0.01"]), tmp / "trained")
    return source, frozen, trained


def test_a_conditional_run_starts_as_the_unconditional_model_it_extends(runs):
    source, frozen, _ = map(sashimi.load_model, runs)
    assert source.n_labels == 0 and frozen.config.labels[7] == "seven"
    assert frozen.label_embedding.weight.shape == (10, frozen.config.d_model)
    assert frozen.label_embedding.weight.abs().max() < 1e-20  # zeros, moved by an lr of 1e-30
    tokens = torch.randint(0, 256, (2, 64))
    with torch.no_grad():
        torch.testing.assert_close(frozen(tokens, torch.tensor([3, 8])), source(tokens), rtol=0, atol=1e-9)


def test_label_lr_trains_the_label_embedding_at_its_own_lr(runs, tone_root, tmp_path):
    from tests.train.conftest import tiny_overrides

    over = tiny_overrides(tone_root, **{"trainer.max_steps": 2, "trainer.precision": "64-true"})
    source = sashimi.load_model(runs[0])
    warm = over + [f"trainer.init_from={runs[0]}", f"model.labels={DIGITS}", "optim.lr=1e-30",
                   "model.ssm_lr=1e-30", "optim.label_lr=0.01"]
    moved = sashimi.load_model(train(load_config("demo", warm), tmp_path / "label-lr"))
    assert moved.label_embedding.weight.abs().max() > 1e-3  # only the label vectors had an lr that moves them
    for name, value in source.state_dict().items():
        torch.testing.assert_close(moved.state_dict()[name], value, rtol=0, atol=1e-20)


def test_training_learns_label_vectors_and_evaluates_with_labels(runs):
    trained = sashimi.load_model(runs[2])
    assert trained.label_embedding.weight.abs().sum() > 0  # each clip's digit reached the model
    result = evaluate_checkpoint(runs[2].parent / "model", split="test", config=runs[2].parent / "config.yaml")
    assert 0 < result["bits_per_sample"] < 12 and result["examples"] == 10


def test_package_keeps_the_labels_of_its_card_set_and_the_bits_reproduce(runs, tmp_path):
    out = tmp_path / "cond"
    assert main(["package", str(runs[2].parent), "--out", str(out), "--summary", "conditional tones",
                 "--card-clips", "4"]) == 0
    cards = load_card_set(out)
    assert cards.label_names[0] == "zero" and len(cards.labels) == 4
    card = (out / "README.md").read_text()
    written = float(card.split("the first 4 test clips): **")[1].split(" bits")[0])
    assert abs(card_set_score(sashimi.load_model(out), cards) - written) < 1e-4


def test_generate_says_the_label_asked_for_and_refuses_unknown_ones(runs, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", str(runs[2]), "--n", "3", "--seconds", "0.01", "--out", str(out),
                 "--label", "two,five"]) == 0
    rows = json.loads((out / "manifest.json").read_text())["samples"]
    assert sorted((r["seed"], r["label"]) for r in rows) == [(0, "two"), (1, "five"), (2, "two")]
    assert main(["generate", str(runs[2]), "--n", "2", "--seconds", "0.01", "--out", str(tmp_path / "all")]) == 0
    rows = json.loads((tmp_path / "all" / "manifest.json").read_text())["samples"]
    assert sorted(r["label"] for r in rows) == ["one", "zero"]  # every label in turn by default
    assert main(["generate", str(runs[2]), "--n", "1", "--seconds", "0.01", "--out", str(tmp_path / "x"),
                 "--label", "eleven"]) == 2
    assert "unknown label(s) ['eleven']; this model's labels are zero, one" in capsys.readouterr().err
    assert main(["generate", str(runs[0]), "--n", "1", "--seconds", "0.01", "--out", str(tmp_path / "y"),
                 "--label", "one"]) == 2
    assert "this model is unconditional" in capsys.readouterr().err


def test_generate_with_guidance_records_it_and_refuses_models_without_label_dropout(runs, tmp_path, capsys):
    import dataclasses

    model = sashimi.load_model(runs[2])
    assert main(["generate", str(runs[2]), "--n", "1", "--seconds", "0.01", "--out", str(tmp_path / "x"),
                 "--guidance", "2"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--guidance: guidance needs a model trained with model.label_dropout > 0 (its unconditional mode); "
        "this one was trained with every label")
    model.config = dataclasses.replace(model.config, label_dropout=0.2)
    sashimi.save_model(model, tmp_path / "guided")
    out = tmp_path / "gen"
    assert main(["generate", str(tmp_path / "guided"), "--n", "2", "--seconds", "0.01", "--out", str(out),
                 "--guidance", "2", "--label", "three"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["guidance"] == 2.0
    assert [r["label"] for r in manifest["samples"]] == ["three", "three"]


def test_label_margin_scores_each_labelled_clip_under_its_rival_and_pays_the_missing_bits(tone_root, monkeypatch):
    """loss = NLL + w * sum over labelled clips of max(0, margin - gap) bits, in nats per sample; the passes of a
    step share one label-dropout draw, and a dropped clip pays no margin."""
    import math

    from sashimi.metrics import token_nll
    from sashimi.models.lm import NO_LABEL
    from sashimi.train.module import SaShiMiTask
    from tests.train.conftest import tiny_overrides

    over = tiny_overrides(tone_root, **{"optim.label_margin": 1e4, "optim.label_margin_weight": 0.5,
                                        "model.label_dropout": 0.5, "model.labels": DIGITS})
    task = SaShiMiTask(load_config("demo", over).to_dict())
    with torch.no_grad():
        task.model.label_embedding.weight.normal_(0, 1)
    tokens, labels = torch.randint(0, 256, (8, 64)), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    seen = []
    forward = task.model.forward
    monkeypatch.setattr(task.model, "forward", lambda t, lab=None: seen.append(lab) or forward(t, lab))
    torch.manual_seed(3)
    loss = task.training_loss((tokens, labels))
    drawn, rivals = seen
    assert ((drawn == labels) | (drawn == NO_LABEL)).all() and 0 < (drawn == NO_LABEL).sum() < 8
    assert torch.equal(rivals, task.model.rival_labels(drawn)) and (rivals[drawn >= 0] != drawn[drawn >= 0]).all()
    with torch.no_grad():
        own, rival = token_nll(forward(tokens, drawn), tokens), token_nll(forward(tokens, rivals), tokens)
        gap = (rival - own).sum(1) / math.log(2)
        paid = ((1e4 - gap) * (drawn >= 0)).sum() * math.log(2) / own.numel()
        torch.testing.assert_close(loss, own.mean() + 0.5 * paid)
    loss.backward()
    assert task.model.label_embedding.weight.grad.abs().sum() > 0


def test_a_margin_window_counts_the_gap_around_each_clips_onset_only(tone_root):
    import math

    from sashimi.audio.onsets import onset_window
    from sashimi.metrics import token_nll
    from sashimi.train.module import SaShiMiTask
    from tests.train.conftest import tiny_overrides

    over = tiny_overrides(tone_root, **{"optim.label_margin": 1e4, "optim.label_margin_window": "[0.001,0.002]",
                                        "model.labels": DIGITS})
    task = SaShiMiTask(load_config("demo", over).to_dict())
    with torch.no_grad():
        task.model.label_embedding.weight.normal_(0, 1)
    tokens = torch.full((3, 64), 128)  # mu-law 128: silence; clip 0 turns loud at 20, clip 1 at 40, clip 2 never
    tokens[0, 20:], tokens[1, 40:] = 250, 10
    labels = torch.tensor([4, 5, 6])
    loss = task.training_loss((tokens, labels))
    window = onset_window(tokens, task.loud(tokens), 16, 32)  # 0.001 s and 0.002 s at 16 kHz
    assert window.sum(1).tolist() == [48, 40, 0]  # clip 1's window ends at the clip's end
    with torch.no_grad():
        own = token_nll(task.model(tokens, labels), tokens)
        rival = token_nll(task.model(tokens, task.model.rival_labels(labels)), tokens)
        gap = ((rival - own) * window).sum(1) / math.log(2)
        paid = (1e4 - gap[:2]).sum() * math.log(2) / own.numel()  # the clip with no onset pays nothing
        torch.testing.assert_close(loss, own.mean() + paid)
