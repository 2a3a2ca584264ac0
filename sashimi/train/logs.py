"""Read a run's CSV logs (all attempts) and plot its learning curve.

    python -m sashimi.train.logs RUN_DIR --png curve.png
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from sashimi.errors import ConfigError


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} over every attempt (csv/version_N); a resumed attempt's values
    replace the earlier attempt's at the same step (the steps replayed after a kill)."""
    files = sorted(Path(run_dir).glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    if not files:
        raise ConfigError(f"{run_dir}: no csv/version_*/metrics.csv (not a training run directory?)")
    merged: dict[str, dict[int, float]] = {}
    for path in files:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                for key, value in row.items():
                    if value and key not in ("step", "epoch"):
                        merged.setdefault(key, {})[int(row["step"])] = float(value)
    return {key: sorted(values.items()) for key, values in merged.items()}


def plot_curves(run_dir: str | Path, png: str | Path, title: str | None = None) -> Path:
    """train/loss and val/loss in bits per sample against optimizer steps, with the uniform 8-bit line; for a
    diffusion model, the denoising losses (mean squared error of the noise, per band of steps too)."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global figure state, renders to PNG

    m = read_metrics(run_dir)
    diffusion = _is_diffusion_run(run_dir)
    scale = 1.0 if diffusion else 1 / math.log(2)
    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    keys = [("train/loss", dict(lw=1, alpha=0.7)), ("val/loss", dict(marker="o", lw=2))]
    keys += [(k, dict(marker=".", lw=1)) for k in sorted(m) if diffusion and k.startswith("val/loss_t")]
    for key, style in keys:
        if key in m:
            steps, values = zip(*m[key])
            ax.plot([s + 1 for s in steps], [v * scale for v in values], label=key, **style)
    if diffusion:
        ax.set_yscale("log")
    else:
        ax.axhline(8.0, color="gray", ls="--", lw=1, label="uniform (8 bits)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("denoising loss (MSE of the noise)" if diffusion else "NLL (bits per sample)")
    ax.set_title(title or Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    return Path(png)


def _is_diffusion_run(run_dir: str | Path) -> bool:
    """Whether the run's config.yaml trains a diffusion model (model.kind: diffwave)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return False
    model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
    return model.get("kind") == "diffwave"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plot a training run's learning curve from its CSV logs.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    print(plot_curves(args.run_dir, args.png, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
