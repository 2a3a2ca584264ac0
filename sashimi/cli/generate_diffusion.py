"""`sashimi generate` for a diffusion model (DiffWave): batches of seeded samples, into the same output folder,
manifest and report as the autoregressive model's samples.

Ancestral DDPM over all T diffusion steps by default; ``--steps S``: deterministic DDIM with S network evaluations.
Sample i uses seed SEED+i, and a seed gives the same audio whatever the batch. A diffusion model has no exact
likelihood: the manifest lists the samples by seed, without log-likelihoods. ``--weights bf16`` runs the network's
Linear layers in bfloat16 (``sashimi.nn.precision``; float32 accumulation, everything else float32).
"""
from __future__ import annotations

import math
import time
import warnings

import torch
from tqdm import tqdm

from sashimi.cli.generate import os_error_message, pcm16
from sashimi.diffusion.generate import generate
from sashimi.diffusion.samplers import ddim_steps
from sashimi.errors import ConfigError
from sashimi.generation.output import OutputFolder
from sashimi.generation.report import classifier_heard, write_report
from sashimi.nn.precision import bf16_linears
from sashimi.runtime import bf16_matmul_fast

# options of the autoregressive sampler, which mean nothing to a diffusion model: (argparse dest, flag, default)
AR_OPTIONS = (("prime", "--prime", None), ("prime_seconds", "--prime-seconds", None),
              ("temperature", "--temperature", None), ("top_p", "--top-p", None), ("top_k", "--top-k", None),
              ("stream", "--stream", None), ("backend", "--backend", None))


def run_diffusion(args, model) -> int:
    """``args``: the parsed `sashimi generate` options; ``model``: the DiffWave they name."""
    given = [flag for dest, flag, default in AR_OPTIONS if getattr(args, dest, default) != default]
    if given:
        raise ConfigError(f"{given[0]} applies to autoregressive models; {args.checkpoint} is a diffusion model "
                          "(DiffWave): drop it (--steps S samples faster, with S network evaluations)")
    cfg = model.config
    if args.steps is not None:
        try:
            ddim_steps(cfg.diffusion_steps, args.steps)
        except ConfigError:
            raise ConfigError(f"--steps must be in 1..{cfg.diffusion_steps} (the model's diffusion steps), "
                              f"got {args.steps}") from None
    n_new = int(round(args.seconds * cfg.sample_rate))
    if n_new < 1:
        raise ConfigError(f"--seconds {args.seconds} is less than one sample at the model's {cfg.sample_rate} Hz; "
                          f"use at least {1 / cfg.sample_rate:.3g}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights == "bf16":
        if args.device == "cpu" and not bf16_matmul_fast():
            warnings.warn("--weights bf16: this CPU has no bfloat16 matrix units that PyTorch uses, so bf16 Linear "
                          "layers run several times slower than float32 here (4x on an AVX2-only CPU); drop "
                          "--weights bf16", RuntimeWarning, stacklevel=2)
        model = bf16_linears(model)
    try:
        return _run(args, model, n_new)
    except OSError as err:  # a full disk, a read-only folder: one line, not a traceback
        raise ConfigError(os_error_message(err, args)) from None


def _run(args, model, n_new: int) -> int:
    cfg = model.config
    identity = {"checkpoint": str(args.checkpoint), "n": args.n, "seconds": args.seconds, "seed": args.seed,
                "steps": args.steps}
    if args.weights != "float32":  # bf16 Linear layers change the audio: a resumed run must use them too
        identity["weights"] = args.weights
    out = OutputFolder(args.out, identity, resume=args.resume, overwrite=args.overwrite)
    seeds = [args.seed + i for i in range(args.n) if args.seed + i not in out.finished_seeds]
    batch = args.batch_size or args.n
    evaluations = args.steps or cfg.diffusion_steps  # network evaluations per batch
    start = time.perf_counter()
    with tqdm(total=math.ceil(len(seeds) / batch) * evaluations, unit="step", desc="denoise") as bar:
        for b0 in range(0, len(seeds), batch):
            _generate_batch(model, seeds[b0 : b0 + batch], n_new, args.steps, evaluations, out, bar)
    elapsed = time.perf_counter() - start
    rows = out.finalize(_manifest(args, cfg, evaluations, elapsed, len(seeds) * n_new))
    if args.report:
        write_report(out.folder, rows, f"sashimi generate: {args.checkpoint}",
                     heard=classifier_heard(out.folder, rows, cfg.sample_rate))
    generated = len(seeds) * n_new / cfg.sample_rate
    kept = f", {args.n - len(seeds)} kept from the interrupted run" if len(seeds) < args.n else ""
    print(f"wrote {len(rows)} samples to {out.folder} ({generated / max(elapsed, 1e-9):.3f}x real time with "
          f"{evaluations} network evaluations per sample{kept})")
    return 0


def _generate_batch(model, seeds: list[int], n_new: int, steps: int | None, evaluations: int,
                    out: OutputFolder, bar: tqdm) -> None:
    """Sample one batch and write its WAVs; the bar moves one diffusion step at a time."""
    seconds = len(seeds) * n_new / model.config.sample_rate  # audio this batch makes
    t0, done = time.perf_counter(), 0

    def on_step() -> None:
        nonlocal done
        done += 1
        bar.update(1)
        bar.set_postfix_str(f"{seconds * done / evaluations / max(time.perf_counter() - t0, 1e-9):.3f}x real time")

    audio = generate(model, seeds, n_new, steps=steps, on_step=on_step)  # (B, n_new)
    rows = [{"seed": s, "n_generated": n_new} for s in seeds]
    out.finish_batch(pcm16(audio.float().cpu().numpy()), rows, model.config.sample_rate)


def _manifest(args, cfg, evaluations: int, elapsed: float, generated: int) -> dict:
    return {
        "checkpoint": str(args.checkpoint),
        "kind": "diffwave",
        "sample_rate": cfg.sample_rate,
        "settings": {"n": args.n, "seconds": args.seconds, "seed": args.seed,
                     "sampler": "ddpm" if args.steps is None else "ddim", "network_evaluations": evaluations,
                     "diffusion_steps": cfg.diffusion_steps, "batch_size": args.batch_size or args.n,
                     "device": args.device, "weights": args.weights},
        "log_likelihood_note": "a diffusion model has no exact likelihood: samples are listed by seed",
        "timing": {"seconds": elapsed, "samples_generated": generated,
                   "samples_per_second": generated / max(elapsed, 1e-9),
                   "real_time_factor": generated / max(elapsed, 1e-9) / cfg.sample_rate,
                   "note": "this invocation only (a resumed run counts what it generated itself)"},
    }
