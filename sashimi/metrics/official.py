"""Import the official SC09 evaluation classifier (``resnext.pth``) into our ``DigitClassifier``, never running
code from the pickle.

The official release (state-spaces/s4 ``models/sashimi/sc09_classifier``) ships the trained ResNeXt-29 as a
whole pickled module, ``torch.save(torch.nn.DataParallel(CifarResNeXt(...)))``: unpickling it the ordinary way
imports ``models.resnext`` and may run whatever the pickle names. Here every module class the file may name is
replaced by an inert stand-in (``_PickledModule``) that only keeps the pickled instance state; any other global
that is not a tensor, storage or plain container is refused with a ``CheckpointError``.

- zip files (``torch.save`` since torch 1.6): torch's own restricted unpickler, ``torch.load(weights_only=True)``
  inside ``torch.serialization.safe_globals`` listing ``(stand_in, "global.name")`` pairs; the globals are first
  listed statically with ``torch.serialization.get_unsafe_globals_in_checkpoint`` so that a refusal names them.
- legacy files (before torch 1.6, or ``_use_new_zipfile_serialization=False``): torch's weights-only unpickler
  refuses the ``("module", class, source_file, source)`` persistent ids that this format writes for every module
  class, so ``torch.load`` reads them with ``pickle_module=`` a restricted ``pickle.Unpickler`` whose
  ``find_class`` answers from the same allow-list (torch still decodes the storages).

A plain state dict with the official key names (with or without DataParallel's ``module.`` prefix), or the
training script's ``{"state_dict": ...}`` checkpoint, imports the same way.
"""
from __future__ import annotations

import _compat_pickle
import pickle
import re
import types
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from sashimi.errors import CheckpointError, ConfigError
from sashimi.metrics.classifier import DIGITS, ClassifierConfig, DigitClassifier

__all__ = ["import_official_classifier", "official_to_sashimi", "read_official_state", "OfficialState"]

# The module classes of the official pickle (``from models.resnext import CifarResNeXt`` in its training script).
MODULE_GLOBALS = (
    "models.resnext.CifarResNeXt",
    "models.resnext.ResNeXtBottleneck",
    "torch.nn.parallel.data_parallel.DataParallel",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.linear.Linear",
)
_ALLOWED_WHAT = "only tensors, storages, plain containers and the official classifier's module classes are allowed"
_HPARAMS = ("cardinality", "depth", "base_width", "widen_factor", "nlabels", "block_depth")
# Module attributes compared with the corresponding module of our model when the pickle carries them.
_LAYER_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                "padding_mode", "num_features", "eps", "affine", "track_running_stats", "in_features", "out_features")


class _PickledModule:
    """Inert stand-in for a pickled ``nn.Module``: keeps the pickled instance state and nothing else."""

    __slots__ = ("pickled_state",)
    global_name = "?"
    dump_patches = False  # torch's legacy loader reads this; never write patch files

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state


def _stand_in(global_name: str) -> type:
    short = global_name.rsplit(".", 1)[1]
    return type(short, (_PickledModule,), {"__slots__": (), "global_name": global_name, "__module__": __name__,
                                           "__qualname__": f"_PickledModule[{global_name}]"})


def _no_backend():
    """Stand-in for torch < 1.0's ``torch.nn.backends.thnn._get_thnn_function_backend`` (a module's ``_backend``)."""
    return None


_STAND_INS = {name: _stand_in(name) for name in MODULE_GLOBALS}
_STAND_INS_BY_TYPE = {cls: name for name, cls in _STAND_INS.items()}
_INERT_FUNCTIONS = {"torch.nn.backends.thnn._get_thnn_function_backend": _no_backend}
_SAFE_GLOBALS = [(obj, name) for name, obj in {**_STAND_INS, **_INERT_FUNCTIONS}.items()]

# For legacy files: what ``find_class`` may return besides the stand-ins (storage classes are resolved by
# torch's own loader before our ``find_class`` is asked). The same things torch's weights-only loader allows.
_LEGACY_GLOBALS: dict[str, Any] = {
    **_STAND_INS,
    **_INERT_FUNCTIONS,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "torch.device": torch.device,
    "torch.Size": torch.Size,
    "torch.nn.parameter.Parameter": torch.nn.Parameter,
    "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
}


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves globals from ``_LEGACY_GLOBALS`` only (never imports anything)."""

    def find_class(self, module: str, name: str) -> Any:
        # torch.save writes protocol 2, which spells Python 3 names the Python 2 way (``__builtin__.set``).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full not in _LEGACY_GLOBALS:
            raise _RefusedGlobal(full)
        return _LEGACY_GLOBALS[full]


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


_RESTRICTED_PICKLE = types.ModuleType("sashimi_restricted_pickle")
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler
_RESTRICTED_PICKLE.load = _restricted_load


class OfficialState(dict):
    """``{dotted.key: tensor}`` as in a state dict, plus what the pickled module tree said about itself.

    ``hyperparameters``: the ``CifarResNeXt`` attributes found (cardinality, depth, base_width, widen_factor,
    nlabels, block_depth, stages); ``layers``: ``{module path: {"class": global name, attribute: value}}``.
    Both are empty for a plain state dict.
    """

    def __init__(self, *args, hyperparameters: dict | None = None, layers: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hyperparameters = dict(hyperparameters or {})
        self.layers = dict(layers or {})


def _first_line(err: BaseException, limit: int = 160) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _refuse(path, names) -> CheckpointError:
    names = sorted(set(names))
    what = "global " + repr(names[0]) if len(names) == 1 else "globals " + ", ".join(repr(n) for n in names[:4])
    if len(names) > 4:
        what += f" and {len(names) - 4} more"
    return CheckpointError(f"{path}: refuses to load {what} ({_ALLOWED_WHAT})")


def _unreadable(path, err: BaseException) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable PyTorch file (truncated or corrupted?): {_first_line(err)}")


def _load_zip(path):
    with torch.serialization.safe_globals(_SAFE_GLOBALS):
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - unreadable: torch.load below says why
            unsafe = []
        if unsafe:
            raise _refuse(path, unsafe)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*TorchScript archive")
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            m = re.search(r"GLOBAL (\S+)", str(err))
            if m:
                raise _refuse(path, [m.group(1)]) from None
            detail = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = next((ln for ln in detail if "WeightsUnpickler" not in ln and "Weights only" not in ln),
                          detail[-1] if detail else "")
            raise CheckpointError(f"{path}: refused by the restricted unpickler ({detail[:200]})") from None
        except Exception as err:  # noqa: BLE001 - any reading failure is a bad file for the user
            if "TorchScript" in str(err):
                raise CheckpointError(f"{path}: a TorchScript archive (torch.jit.save), not a pickled module or "
                                      "state dict; TorchScript is code and is not loaded") from None
            raise _unreadable(path, err) from None


def _load_legacy(path):
    try:
        with warnings.catch_warnings():
            # the legacy format stores each module class's source, which torch compares with our stand-ins
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RESTRICTED_PICKLE)
    except _RefusedGlobal as err:
        raise _refuse(path, [err.name]) from None
    except RuntimeError as err:
        if "pickle_module" in str(err):  # TORCH_FORCE_WEIGHTS_ONLY_LOAD is set
            raise CheckpointError(f"{path}: a legacy-format (pre torch 1.6) file needs our restricted unpickler, "
                                  "which TORCH_FORCE_WEIGHTS_ONLY_LOAD forbids; unset it or re-save the file "
                                  "in the zip format") from None
        raise _unreadable(path, err) from None
    except Exception as err:  # noqa: BLE001
        raise _unreadable(path, err) from None


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _walk(path, root: _PickledModule) -> OfficialState:
    flat: dict[str, torch.Tensor] = {}
    hparams: dict[str, Any] = {}
    layers: dict[str, dict] = {}
    seen: set[int] = set()

    def visit(prefix: str, mod: _PickledModule) -> None:
        where = prefix.rstrip(".") or "<root>"
        if id(mod) in seen:
            raise CheckpointError(f"{path}: module {where} appears twice in the pickled module tree")
        seen.add(id(mod))
        state = getattr(mod, "pickled_state", None)
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: pickled {mod.global_name} at {where} has no module state")
        gname = _STAND_INS_BY_TYPE[type(mod)]
        info = {"class": gname}
        for k, v in state.items():
            if k in _LAYER_ATTRS and isinstance(v, (int, float, str, bool, tuple, list)):
                info[k] = tuple(v) if isinstance(v, list) else v
        layers[prefix.rstrip(".")] = info
        if gname == "models.resnext.CifarResNeXt":
            for k in _HPARAMS:
                if isinstance(state.get(k), int) and not isinstance(state.get(k), bool):
                    hparams[k] = state[k]
            if isinstance(state.get("stages"), (list, tuple)) and all(isinstance(x, int) for x in state["stages"]):
                hparams["stages"] = tuple(state["stages"])
        non_persistent = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            entries = state.get(group, {})
            if not isinstance(entries, dict):
                raise CheckpointError(f"{path}: {where}.{group} is a {type(entries).__name__}, not a dict")
            for name, t in entries.items():
                if t is None or (group == "_buffers" and name in non_persistent):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise CheckpointError(f"{path}: {prefix}{name} is a {type(t).__name__}, not a tensor")
                flat[prefix + str(name)] = t.detach()
        children = state.get("_modules", {})
        if not isinstance(children, dict):
            raise CheckpointError(f"{path}: {where}._modules is a {type(children).__name__}, not a dict")
        for name, child in children.items():
            if child is None:
                continue
            if not isinstance(child, _PickledModule):
                raise CheckpointError(f"{path}: submodule {prefix}{name} is a {type(child).__name__}, not a module")
            visit(f"{prefix}{name}.", child)

    visit("", root)
    if not flat:
        raise CheckpointError(f"{path}: the pickled {root.global_name} holds no parameters")
    return OfficialState(flat, hyperparameters=hparams, layers=layers)


def read_official_state(path) -> OfficialState:
    """Read ``resnext.pth`` (a pickled module tree or a state dict) into ``{official.key: tensor}``.

    Never imports or calls anything the pickle names beyond tensor/storage rebuilding and plain containers;
    returns an ``OfficialState`` (a dict) whose keys are those of the official model's ``state_dict()``
    (with DataParallel's ``module.`` prefix when the file has it).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{path}: no such file")
    if not p.is_file():
        raise CheckpointError(f"{path}: not a file")
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({_first_line(err)})") from None
    if not magic:
        raise CheckpointError(f"{path}: empty file, not a PyTorch file")
    obj = _load_zip(path) if magic == b"PK\x03\x04" else _load_legacy(path)

    if isinstance(obj, _PickledModule):
        return _walk(path, obj)
    if isinstance(obj, dict) and not _is_tensor_dict(obj) and _is_tensor_dict(obj.get("state_dict")):
        obj = obj["state_dict"]  # the training script's checkpoint dict
    if _is_tensor_dict(obj):
        return OfficialState({k: v.detach() for k, v in obj.items()})
    what = type(obj).__name__ if not isinstance(obj, dict) else "dict that is not a state dict of tensors"
    raise CheckpointError(f"{path}: holds a {what}, not the official classifier module or its state dict")


_TOP = {"conv_1_3x3": "stem_conv", "bn_1": "stem_bn", "classifier": "head"}
_BLOCK = {"conv_reduce": "conv_reduce", "bn_reduce": "bn_reduce", "conv_conv": "conv_group", "bn": "bn_group",
          "conv_expand": "conv_expand", "bn_expand": "bn_expand", "shortcut.shortcut_conv": "shortcut_conv",
          "shortcut.shortcut_bn": "shortcut_bn"}
_STAGE_RE = re.compile(r"stage_([1-9]\d*)\.stage_\1_bottleneck_(\d+)\.(.+)")


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _map_module(path: str) -> str | None:
    """Official module path (no ``module.`` prefix) -> ours, or None when it has no counterpart."""
    if path in _TOP:
        return _TOP[path]
    m = _STAGE_RE.fullmatch(path)
    if m and m.group(3) in _BLOCK:
        return f"stages.{int(m.group(1)) - 1}.{int(m.group(2))}.{_BLOCK[m.group(3)]}"
    return None


def _map_key(key: str) -> str | None:
    module, _, leaf = key.rpartition(".")
    ours = _map_module(module) if module else None
    return f"{ours}.{leaf}" if ours else None


def _infer_config(ours: dict[str, torch.Tensor], hparams: dict) -> ClassifierConfig:
    def need(key: str, official: str) -> torch.Tensor:
        if key not in ours:
            raise CheckpointError(f"no '{official}' entry: not the official SC09 ResNeXt classifier")
        return ours[key]

    stem = need("stem_conv.weight", "conv_1_3x3.weight")
    if stem.dim() != 4 or tuple(stem.shape[2:]) != (3, 3):
        raise CheckpointError(f"conv_1_3x3.weight has shape {tuple(stem.shape)}, expected (C, 1, 3, 3)")
    if stem.shape[1] != 1:
        raise CheckpointError(f"the stem conv_1_3x3 takes {stem.shape[1]} input channels; the SC09 classifier takes "
                              "1 (a 1x32x32 log-mel image, CifarResNeXt(in_channels=1))")
    stem_width = stem.shape[0]

    blocks = []
    for s in range(3):
        idx = {int(k.split(".")[2]) for k in ours if k.startswith(f"stages.{s}.")}
        if not idx or idx != set(range(len(idx))):
            raise CheckpointError(f"stage_{s + 1} has bottlenecks {sorted(idx)}, expected 0..n-1: "
                                  "not the official SC09 ResNeXt classifier")
        blocks.append(len(idx))
    if len(set(blocks)) != 1:
        raise CheckpointError(f"stages have {blocks} bottlenecks; the official ResNeXt has the same number in each")
    n = blocks[0]

    group = need("stages.0.0.conv_group.weight", "stage_1.stage_1_bottleneck_0.conv_conv.weight")
    if group.dim() != 4 or group.shape[1] == 0 or group.shape[0] % group.shape[1]:
        raise CheckpointError(f"stage_1.stage_1_bottleneck_0.conv_conv.weight has shape {tuple(group.shape)}, "
                              "expected (D, D / cardinality, 3, 3)")
    inner = group.shape[0]
    cardinality = inner // group.shape[1]
    out1 = need("stages.0.0.conv_expand.weight", "stage_1.stage_1_bottleneck_0.conv_expand.weight").shape[0]
    if out1 % stem_width:
        raise CheckpointError(f"stage_1 width {out1} is not a multiple of the stem width {stem_width}")
    head = need("head.weight", "classifier.weight")
    if head.dim() != 2:
        raise CheckpointError(f"classifier.weight has shape {tuple(head.shape)}, expected (classes, features)")
    n_classes = head.shape[0]
    try:
        config = ClassifierConfig(cardinality=cardinality, depth=9 * n + 2, base_width=inner // cardinality,
                                  widen_factor=out1 // stem_width, stem_width=stem_width, n_classes=n_classes,
                                  classes=DIGITS if n_classes == len(DIGITS) else tuple(map(str, range(n_classes))))
    except ConfigError as err:
        raise CheckpointError(f"the weights imply an invalid classifier: {err}") from None

    implied = {"cardinality": config.cardinality, "depth": config.depth, "base_width": config.base_width,
               "widen_factor": config.widen_factor, "nlabels": config.n_classes, "block_depth": n,
               "stages": config.widths}
    for k, v in hparams.items():
        want = implied.get(k)
        if want is not None and ((tuple(want) != tuple(v)) if k == "stages" else want != v):
            raise CheckpointError(f"the pickled CifarResNeXt says {k}={v!r} but its weights imply {implied[k]!r}")
    return config


def official_to_sashimi(state: dict[str, torch.Tensor]) -> tuple[ClassifierConfig, dict[str, torch.Tensor]]:
    """Official ``CifarResNeXt`` keys -> (our ``ClassifierConfig``, a state dict for ``DigitClassifier``).

    The config is read off the tensor shapes and cross-checked with the pickled attributes when ``state`` is an
    ``OfficialState`` that carries them; keys and shapes are checked against ``DigitClassifier(config)``.
    """
    ours: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        short = _strip_module(key)
        mapped = _map_key(short)
        if mapped is None:
            unknown.append(key)
            continue
        if mapped in ours:
            raise CheckpointError(f"'{key}' appears both with and without the DataParallel 'module.' prefix")
        ours[mapped] = value
    if unknown:
        raise CheckpointError(f"keys that are not in the official SC09 ResNeXt classifier: {unknown[:5]}"
                              + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    config = _infer_config(ours, getattr(state, "hyperparameters", {}))

    with torch.device("meta"):
        expected = DigitClassifier(config).state_dict()
    for key in expected:  # BatchNorm counters that pickles from torch < 0.4.1 lack; unused in eval mode
        if key.endswith(".num_batches_tracked") and key not in ours and key.replace("num_batches_tracked",
                                                                                      "running_mean") in ours:
            ours[key] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in expected if k not in ours]
    extra = [k for k in ours if k not in expected]
    if missing or extra:
        raise CheckpointError(f"the official weights do not map onto DigitClassifier({config.cardinality}x"
                              f"{config.base_width}d, depth {config.depth}): missing {missing[:5]}, "
                              f"unexpected {extra[:5]}")
    for k, v in ours.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{k} has shape {tuple(v.shape)}, the inferred config implies "
                                  f"{tuple(expected[k].shape)}")
    return config, ours


def _check_layers(model: DigitClassifier, layers: dict) -> None:
    modules = dict(model.named_modules())
    for path, info in layers.items():
        ours = _map_module(_strip_module(path)) if path not in ("", "module") else None
        if ours is None or ours not in modules:
            continue
        for attr, value in info.items():
            if attr == "class" or not hasattr(modules[ours], attr):
                continue
            mine = getattr(modules[ours], attr)
            mine = tuple(mine) if isinstance(mine, list) else mine
            if mine != value:
                raise CheckpointError(f"{path}.{attr} is {value!r}; our {ours} has {mine!r} "
                                      "(not the official classifier's layer settings)")


def import_official_classifier(path) -> DigitClassifier:
    """``resnext.pth`` (official SC09 classifier, pickled module or state dict) -> our ``DigitClassifier``, in eval."""
    state = read_official_state(path)
    try:
        config, ours = official_to_sashimi(state)
        model = DigitClassifier(config)
        _check_layers(model, state.layers)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    model.load_state_dict(ours, strict=True)
    return model.eval()

