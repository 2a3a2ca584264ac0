"""Import weights of the official standalone SaShiMi backbone (state-spaces/s4, models/sashimi/sashimi.py).

The official S4 layers in their default configuration (DPLR, dt under exp, Re A under exp) use the same
parameterization as ours, so conversion is a renaming plus reshapes:
  inv_dt (H 1) -> log_dt (H);  B/P/C keep their real-view layout (leading n_ssm/rank/channel axes);
  D (1 H) -> D (H);  Conv1d weights (O I 1) -> Linear (O I);  l_kernel is carried so C stays C~.
Sizes, depth, pooling, expansion, U-Net layout and d_state are all read from the state dict itself.
"""
from __future__ import annotations

import re

import torch

from sashimi.errors import CheckpointError


def infer_backbone_config(sd: dict[str, torch.Tensor]) -> dict:
    """Backbone keyword arguments (for ``SaShiMi``) implied by an official state dict."""
    d_model = sd["norm.weight"].shape[0]
    pools = _down_pool_indices(sd)
    if not pools:
        raise CheckpointError("no 'd_layers.K.linear.weight' entries: not an official SaShiMi backbone state dict")
    H, pool, expand = d_model, [], None
    for k in pools:
        out_dim, in_dim = sd[f"d_layers.{k}.linear.weight"].shape[:2]
        pool.append(in_dim // H)
        expand = out_dim // H
        H = out_dim
    unet = pools[0] > 0
    c_idx = sorted({int(m.group(1)) for key in sd if (m := re.match(r"c_layers\.(\d+)\.", key))})
    has_ff = any(key.startswith("c_layers.1.layer.ff.") for key in sd)
    n_layers = len(c_idx) // (2 if has_ff else 1)
    a_key = next(key for key in sd if key.endswith("kernel.A_real"))
    ff = 0
    if has_ff:
        ff = sd["c_layers.1.layer.ff.0.0.weight"].shape[0] // sd["c_layers.1.layer.ff.0.0.weight"].shape[1]
    c_key = next(key for key in sd if key.endswith("kernel.C"))
    return dict(d_model=d_model, n_layers=n_layers, pool=tuple(pool), expand=expand, ff=ff, layer="s4",
                d_state=2 * sd[a_key].shape[-1], unet=unet, bidirectional=sd[c_key].shape[0] == 2)


def _down_pool_indices(sd) -> list[int]:
    return sorted({int(m.group(1)) for key in sd if (m := re.match(r"d_layers\.(\d+)\.linear\.weight$", key))})


def convert_official_backbone(sd: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(backbone kwargs, state dict for ``sashimi.SaShiMi``) from an official backbone state dict."""
    sd = strip_prefix(sd)
    cfg = infer_backbone_config(sd)
    names = _module_map(sd, cfg)
    out: dict[str, torch.Tensor] = {"norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}
    for src, dst in names.items():
        out.update(_convert_module(sd, src, dst))
    unused = sorted(set(sd) - _consumed(sd, names) - {"norm.weight", "norm.bias"})
    if unused:
        raise CheckpointError(f"official state dict has keys this converter does not understand: {unused[:8]}")
    return cfg, out


def strip_prefix(sd: dict) -> dict:
    """Accept a bare backbone state dict or one nested under a prefix (e.g. 'model.backbone.')."""
    if "norm.weight" in sd:
        return sd
    for key in sd:
        if key.endswith("d_layers.0.linear.weight") or key.endswith("d_layers.0.norm.weight"):
            prefix = key[: key.index("d_layers.0.")]
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    raise CheckpointError("could not find an official SaShiMi backbone in the state dict (no 'norm.weight' "
                          "or '...d_layers.0.' keys)")


def _module_map(sd, cfg) -> dict[str, str]:
    """Official module prefix -> our module prefix."""
    n_tiers, per_tier = len(cfg["pool"]), 2 * cfg["n_layers"] if cfg["ff"] else cfg["n_layers"]
    names, k = {}, 0
    for i in range(n_tiers):  # d_layers: [U-Net blocks of tier i..., DownPool i] per tier
        if cfg["unet"]:
            for j in range(per_tier):
                names[f"d_layers.{k}"] = f"down_blocks.{i}.{j}"
                k += 1
        names[f"d_layers.{k}"] = f"down.{i}"
        k += 1
    for j in range(per_tier):
        names[f"c_layers.{j}"] = f"center.{j}"
    for u in range(n_tiers):  # u_layers run from the deepest tier outwards
        i = n_tiers - 1 - u
        names[f"u_layers.{u}.0"] = f"up.{i}"
        for j in range(per_tier):
            names[f"u_layers.{u}.{j + 1}"] = f"up_blocks.{i}.{j}"
    return names


def _convert_module(sd, src: str, dst: str) -> dict[str, torch.Tensor]:
    g = lambda name: sd[f"{src}.{name}"]
    if f"{src}.linear.weight" in sd:  # DownPool / UpPool (Conv1d k=1)
        return {f"{dst}.linear.weight": g("linear.weight")[..., 0], f"{dst}.linear.bias": g("linear.bias")}
    out = {f"{dst}.norm.weight": g("norm.weight"), f"{dst}.norm.bias": g("norm.bias")}
    if f"{src}.layer.ff.0.0.weight" in sd:  # feed-forward block
        out.update({f"{dst}.linear_in.weight": g("layer.ff.0.0.weight")[..., 0],
                    f"{dst}.linear_in.bias": g("layer.ff.0.0.bias"),
                    f"{dst}.linear_out.weight": g("layer.ff.2.weight")[..., 0],
                    f"{dst}.linear_out.bias": g("layer.ff.2.bias")})
        return out
    k = f"{src}.layer.layer.kernel"
    if sd[f"{k}.B"].shape[0] != 1:
        raise CheckpointError(f"{k}.B: only n_ssm=H (one (A, B) per channel) is supported")
    out.update({
        f"{dst}.layer.D": g("layer.layer.D").reshape(-1),
        f"{dst}.layer.kernel.log_dt": sd[f"{k}.inv_dt"][:, 0],
        f"{dst}.layer.kernel.A_real": sd[f"{k}.A_real"],
        f"{dst}.layer.kernel.A_imag": sd[f"{k}.A_imag"],
        f"{dst}.layer.kernel.B": sd[f"{k}.B"][0],
        f"{dst}.layer.kernel.P": sd[f"{k}.P"],
        f"{dst}.layer.kernel.C": sd[f"{k}.C"],
        f"{dst}.layer.kernel.l_kernel": sd[f"{k}.l_kernel"],
        f"{dst}.layer.output_linear.weight": g("layer.output_linear.0.weight"),
        f"{dst}.layer.output_linear.bias": g("layer.output_linear.0.bias"),
    })
    return out


def _consumed(sd, names) -> set[str]:
    return {key for key in sd if any(key.startswith(src + ".") for src in names)}


def load_official_backbone(path: str, dtype: torch.dtype | None = None):
    """Read an official checkpoint file (never unpickling code) and return our ``SaShiMi`` with its weights."""
    from sashimi.models.backbone import SaShiMi

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(err).__name__}: {err})") from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict (or a dict with 'state_dict')")
    cfg, ours = convert_official_backbone(sd)
    model = SaShiMi(**cfg)
    if dtype is not None:
        model = model.to(dtype)
    ours = {k: v.to(model.state_dict()[k].dtype) if v.is_floating_point() else v for k, v in ours.items()}
    model.load_state_dict(ours, strict=True)
    return cfg, model
