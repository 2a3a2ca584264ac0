"""Importing the official SC09 classifier (a whole pickled ``DataParallel(CifarResNeXt)``) without running its code.

The fixtures are real pickled module trees: test-local classes that follow the official layout and names
(``models/sashimi/sc09_classifier/models/resnext.py``: attributes, submodule names, forward) are registered as
``models.resnext`` while ``torch.save`` writes them, then removed from ``sys.modules`` so that nothing can
resolve them when the file is read back. Expected logits come from the original module's own forward.
"""
from __future__ import annotations

import builtins
import contextlib
import os
import sys
import types
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi.errors import CheckpointError
from sashimi.metrics.classifier import ClassifierConfig, DigitClassifier
from sashimi.metrics.official import import_official_classifier, official_to_sashimi, read_official_state

# Tiny official-layout model: 2 x 4d, depth 20 (2 bottlenecks a stage: projecting and identity shortcuts),
# widen 2, stem 8 -> stage widths 16, 32, 64.
TINY = dict(nlabels=10, cardinality=2, depth=20, base_width=4, widen_factor=2, stem=8)
TINY_CONFIG = ClassifierConfig(cardinality=2, depth=20, base_width=4, widen_factor=2, stem_width=8)
FORMATS = ("zip", "legacy")


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread avoids stalls when other jobs share the CPU cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- the official layout, written out for the fixtures (names as in the official resnext.py) --------------------

class ResNeXtBottleneck(nn.Module):
    def __init__(self, in_channels, out_channels, stride, cardinality, base_width, widen_factor, stem):
        super().__init__()
        width_ratio = out_channels / (widen_factor * stem)  # the official hard-codes stem = 64
        D = cardinality * int(base_width * width_ratio)
        self.conv_reduce = nn.Conv2d(in_channels, D, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn_reduce = nn.BatchNorm2d(D)
        self.conv_conv = nn.Conv2d(D, D, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(D)
        self.conv_expand = nn.Conv2d(D, out_channels, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut.add_module("shortcut_conv", nn.Conv2d(in_channels, out_channels, kernel_size=1,
                                                                stride=stride, padding=0, bias=False))
            self.shortcut.add_module("shortcut_bn", nn.BatchNorm2d(out_channels))

    def forward(self, x):
        b = F.relu(self.bn_reduce(self.conv_reduce(x)), inplace=True)
        b = F.relu(self.bn(self.conv_conv(b)), inplace=True)
        b = self.bn_expand(self.conv_expand(b))
        return F.relu(self.shortcut(x) + b, inplace=True)


class CifarResNeXt(nn.Module):
    def __init__(self, nlabels, cardinality=8, depth=29, base_width=64, widen_factor=4, in_channels=1, stem=64):
        super().__init__()
        self.cardinality = cardinality
        self.depth = depth
        self.block_depth = (depth - 2) // 9
        self.base_width = base_width
        self.widen_factor = widen_factor
        self.nlabels = nlabels
        self.output_size = stem
        self.stem = stem
        self.stages = [stem, stem * widen_factor, 2 * stem * widen_factor, 4 * stem * widen_factor]
        self.conv_1_3x3 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(stem)
        self.stage_1 = self.block("stage_1", self.stages[0], self.stages[1], 1)
        self.stage_2 = self.block("stage_2", self.stages[1], self.stages[2], 2)
        self.stage_3 = self.block("stage_3", self.stages[2], self.stages[3], 2)
        self.classifier = nn.Linear(self.stages[3], nlabels)

    def block(self, name, in_channels, out_channels, pool_stride=2):
        block = nn.Sequential()
        for b in range(self.block_depth):
            args = (in_channels, out_channels, pool_stride) if b == 0 else (out_channels, out_channels, 1)
            block.add_module(f"{name}_bottleneck_{b}", ResNeXtBottleneck(
                *args, self.cardinality, self.base_width, self.widen_factor, self.stem))
        return block

    def forward(self, x):
        x = F.relu(self.bn_1(self.conv_1_3x3(x)), inplace=True)
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        x = F.avg_pool2d(x, 8, 1)
        return self.classifier(x.view(-1, self.stages[3]))


for _cls in (ResNeXtBottleneck, CifarResNeXt):
    _cls.__module__, _cls.__qualname__ = "models.resnext", _cls.__name__


@contextlib.contextmanager
def official_classes_importable():
    """Register ``models`` / ``models.resnext`` only while pickling; afterwards nothing can resolve them."""
    saved = {k: sys.modules.get(k) for k in ("models", "models.resnext")}
    pkg, mod = types.ModuleType("models"), types.ModuleType("models.resnext")
    mod.CifarResNeXt, mod.ResNeXtBottleneck, pkg.resnext = CifarResNeXt, ResNeXtBottleneck, mod
    sys.modules.update({"models": pkg, "models.resnext": mod})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def save(obj, path, fmt: str):
    with official_classes_importable(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy format: "Couldn't retrieve source code for container ..."
        torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def official_model(**overrides) -> CifarResNeXt:
    model = CifarResNeXt(**{**TINY, **overrides})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
            elif isinstance(m, nn.BatchNorm2d):  # non-trivial eval statistics
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.3, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    return model.eval()


def official_outputs(model: CifarResNeXt, x: torch.Tensor):
    pooled = []
    handle = model.classifier.register_forward_hook(lambda mod, inp, out: pooled.append(inp[0]))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    return logits, pooled[0]


def assert_matches(imported: DigitClassifier, original: CifarResNeXt):
    """Same logits and pooled features: to 1e-6 of their scale in float32 (summation order differs), and to
    1e-10 in float64 (same arithmetic, so any mapping mistake shows far above rounding)."""
    assert not imported.training
    x = torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-10)):
        imported, original = imported.to(dtype), original.to(dtype)
        logits, pooled = official_outputs(original, x.to(dtype))
        with torch.no_grad():
            for got, want in ((imported(x.to(dtype)), logits), (imported(x[:, 0].to(dtype)), logits),
                              (imported.features(x.to(dtype)), pooled)):
                torch.testing.assert_close(got, want, atol=tol * want.abs().max().item(), rtol=0)
    imported.float(), original.float()


def refusal(path, match: str) -> str:
    with pytest.raises(CheckpointError) as info:
        import_official_classifier(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and match in msg, msg
    return msg


# --- pickled module trees ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("data_parallel", [True, False], ids=["DataParallel", "bare"])
def test_imports_pickled_module_tree(tmp_path, fmt, data_parallel):
    original = official_model()
    saved = nn.DataParallel(original) if data_parallel else original
    path = save(saved, tmp_path / "resnext.pth", fmt)
    assert "models.resnext" not in sys.modules and "models" not in sys.modules

    state = read_official_state(path)
    expected = saved.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert state.hyperparameters == {"cardinality": 2, "depth": 20, "block_depth": 2, "base_width": 4,
                                     "widen_factor": 2, "nlabels": 10, "stages": (8, 16, 32, 64)}

    config, ours = official_to_sashimi(state)
    assert config == TINY_CONFIG
    assert ours["stages.2.0.conv_group.weight"] is state[("module." if data_parallel else "")
                                                         + "stage_3.stage_3_bottleneck_0.conv_conv.weight"]

    model = import_official_classifier(path)
    assert isinstance(model, DigitClassifier) and model.config == TINY_CONFIG
    assert "models.resnext" not in sys.modules
    assert_matches(model, original)


def test_full_size_official_layout_infers_the_official_config(tmp_path):
    """The released model's hyperparameters (8 x 64d, depth 29, widen 4, stem 64) come back from the shapes."""
    sd = CifarResNeXt(nlabels=10, in_channels=1).state_dict()
    config, ours = official_to_sashimi({"module." + k: v for k, v in sd.items()})
    assert config == ClassifierConfig()
    assert len(ours) == len(sd)


# --- refusing code ----------------------------------------------------------------------------------------------

class RunsCode:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


class Unlisted:
    """A class the loader could import (it lives in this test module) but must still refuse."""

    def __init__(self):
        self.payload = 1


def payload(kind: str, sentinel) -> RunsCode:
    if kind == "os.system":
        return RunsCode(os.system, f"touch '{sentinel}'")
    return RunsCode(builtins.exec, f"open({str(sentinel)!r}, 'w').close()")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("carrier", ["state_dict", "module_tree"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
def test_refuses_a_pickle_that_would_run_code(tmp_path, fmt, carrier, kind):
    sentinel = tmp_path / "SENTINEL"
    if carrier == "state_dict":
        obj = {"conv_1_3x3.weight": torch.zeros(8, 1, 3, 3), "hook": payload(kind, sentinel)}
    else:
        model = official_model()
        model.on_load = payload(kind, sentinel)  # a plain attribute: pickled in the module's __dict__
        obj = nn.DataParallel(model)
    path = save(obj, tmp_path / "resnext.pth", fmt)
    name = f"{os.system.__module__}.system" if kind == "os.system" else "builtins.exec"
    msg = refusal(path, f"refuses to load global '{name}'")
    assert "official classifier's module classes" in msg
    with pytest.raises(CheckpointError, match="refuses to load global"):
        read_official_state(path)
    assert not sentinel.exists()
    if carrier == "state_dict":  # the payload is live: an ordinary unpickling runs it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(path, weights_only=False)
        assert sentinel.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_refuses_unknown_classes(tmp_path, fmt):
    path = save({"classifier.weight": torch.zeros(10, 64), "extra": Unlisted()}, tmp_path / "a.pth", fmt)
    refusal(path, f"refuses to load global '{Unlisted.__module__}.Unlisted'")

    model = official_model()
    model.act = nn.ReLU()  # a module class that the official tree does not have
    path = save(nn.DataParallel(model), tmp_path / "b.pth", fmt)
    refusal(path, "refuses to load global 'torch.nn.modules.activation.ReLU'")


# --- plain state dicts ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["bare", "module_prefix", "training_checkpoint", "legacy_format"])
def test_imports_a_plain_state_dict(tmp_path, variant):
    original = official_model()
    sd = (nn.DataParallel(original) if variant != "bare" else original).state_dict()
    obj = {"epoch": 3, "state_dict": sd, "accuracy": 0.97} if variant == "training_checkpoint" else sd
    path = save(obj, tmp_path / "resnext.pth", "legacy" if variant == "legacy_format" else "zip")
    state = read_official_state(path)
    assert set(state) == set(sd) and state.hyperparameters == {}
    model = import_official_classifier(path)
    assert model.config == TINY_CONFIG
    assert_matches(model, original)


# --- trees and dicts that do not map onto DigitClassifier -------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_rejects_models_that_are_not_the_classifier(tmp_path, fmt):
    path = save(nn.DataParallel(nn.Linear(4, 3)), tmp_path / "linear.pth", fmt)
    refusal(path, "not in the official SC09 ResNeXt classifier: ['module.weight', 'module.bias']")

    path = save(nn.DataParallel(official_model(in_channels=3)), tmp_path / "rgb.pth", fmt)
    refusal(path, "takes 3 input channels")

    model = official_model()
    model.cardinality = 4  # the attribute disagrees with the grouped convolutions
    path = save(model, tmp_path / "attr.pth", fmt)
    refusal(path, "says cardinality=4 but its weights imply 2")

    model = official_model()
    model.stage_2.stage_2_bottleneck_0.conv_conv.stride = (1, 1)  # same shapes, another network
    path = save(model, tmp_path / "stride.pth", fmt)
    refusal(path, "stage_2.stage_2_bottleneck_0.conv_conv.stride is (1, 1)")


def test_rejects_state_dicts_that_do_not_map(tmp_path):
    sd = official_model().state_dict()
    missing = {k: v for k, v in sd.items() if k != "stage_2.stage_2_bottleneck_1.bn_expand.running_var"}
    refusal(save(missing, tmp_path / "missing.pth", "zip"), "missing ['stages.1.1.bn_expand.running_var']")

    wrong = dict(sd, **{"classifier.weight": torch.zeros(10, 65)})
    refusal(save(wrong, tmp_path / "shape.pth", "zip"), "head.weight has shape (10, 65)")

    both = dict(sd, **{"module.bn_1.weight": sd["bn_1.weight"]})
    refusal(save(both, tmp_path / "both.pth", "zip"), "both with and without")

    refusal(save([torch.zeros(3)], tmp_path / "list.pth", "zip"), "holds a list")

    # BatchNorm counters absent (pickles from torch < 0.4.1) are filled in
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert import_official_classifier(save(old, tmp_path / "old.pth", "zip")).config == TINY_CONFIG


# --- unreadable files -------------------------------------------------------------------------------------------

def test_unreadable_files(tmp_path):
    refusal(tmp_path / "nowhere.pth", "no such file")
    refusal(tmp_path, "not a file")

    for fmt in FORMATS:
        good = save(official_model(), tmp_path / f"good_{fmt}.pth", fmt).read_bytes()
        truncated = tmp_path / f"truncated_{fmt}.pth"
        truncated.write_bytes(good[: len(good) // 2])
        refusal(truncated, "not a readable PyTorch file")

    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    refusal(text, "not a readable PyTorch file")

    noise = tmp_path / "noise.pth"
    noise.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3),
                                    dtype=torch.uint8).numpy().tobytes())
    refusal(noise, "not a readable PyTorch file")

    script = tmp_path / "scripted.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(script))
    refusal(script, "TorchScript archive")

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    refusal(empty, "empty file")


def test_cli_imports_the_official_file_for_sashimi_score(tmp_path, capsys):
    from sashimi.cli.main import main
    from sashimi.metrics.classifier import load_classifier

    original = official_model()
    path = save(nn.DataParallel(original), tmp_path / "resnext.pth", "zip")
    assert main(["classifier", "import", str(path), str(tmp_path / "imported")]) == 0
    assert "imported" in capsys.readouterr().out
    assert_matches(load_classifier(tmp_path / "imported"), original)
    sentinel = tmp_path / "ran"
    bad = tmp_path / "bad.pth"
    torch.save({"x": payload("os.system", sentinel)}, bad)
    assert main(["classifier", "import", str(bad), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "refuses to load global" in err and "Traceback" not in err and not sentinel.exists()
