"""`sashimi generate`: sample audio from a checkpoint, write WAVs sorted by likelihood, a manifest and a report."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
from tqdm import tqdm

from sashimi.audio.quantize import make_quantizer
from sashimi.cli.options import device
from sashimi.errors import CheckpointError, ConfigError
from sashimi.generation.prime import load_prime
from sashimi.generation.report import write_report
from sashimi.generation.sampler import Sampler
from sashimi.generation.sampling import SamplingSettings
from sashimi.models.io import atomic_write, load_model
from sashimi.models.lm import SaShiMiLM


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="sample audio from a trained model",
                              description="Sample audio in recurrent mode; WAVs are sorted by log-likelihood.")
    p.add_argument("checkpoint", help="model checkpoint (.safetensors file or directory)")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds to generate per sample (default 4)")
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; logits are divided by it (default 1)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1 = off)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--prime", help="mono audio file at the model's sample rate to continue")
    p.add_argument("--prime-seconds", type=float, help="use only the first seconds of --prime")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED+i")
    p.add_argument("--out", default="generated", help="output folder (default ./generated)")
    p.add_argument("--stream", help="also write the first sample to this WAV while it is generated")
    p.add_argument("--report", action="store_true", help="write OUT/index.html with players and plots")
    p.add_argument("--batch-size", type=int, help="sequences generated together (default: all of --n)")
    p.add_argument("--threads", type=int, help="CPU threads of the step (default: 2 for the native step where "
                   "the process has 2+ CPUs, 1 for the torch backends; use 1 on a CPU busy with other work)")
    p.add_argument("--device", type=device, default="cpu",
                   help="cpu (default), cuda or cuda:N: where the model runs; on a GPU the step is replayed as "
                   "CUDA graphs")
    p.add_argument("--backend", choices=("native", "inductor", "eager"),
                   help="fast-step backend (default native on CPU: the fused C++ step, built once with the system "
                   "compiler, falling back to inductor, then eager, with a warning; inductor on a GPU)")
    p.add_argument("--eager", action="store_true", help="use the reference step (SaShiMiLM.step), slow")
    p.add_argument("--no-compile", action="store_true", help="same as --backend eager (the fast step, "
                   "uncompiled)")
    p.set_defaults(handler=run)


def _validate(args) -> None:
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ConfigError(f"--seconds must be > 0, got {args.seconds}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.prime_seconds is not None and not args.prime:
        raise ConfigError("--prime-seconds needs --prime FILE")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.backend == "native" and torch.device(args.device).type != "cpu":
        raise ConfigError(f"--backend native runs on the CPU; with --device {args.device} use --backend inductor "
                          "or eager")


def run(args) -> int:
    _validate(args)
    try:
        settings = SamplingSettings(args.temperature, args.top_p, args.top_k)
    except ConfigError as err:
        raise ConfigError(f"--{str(err).replace('_', '-')}") from None
    model = load_model(args.checkpoint, map_location=args.device)
    if not isinstance(model, SaShiMiLM):
        raise CheckpointError(f"{args.checkpoint}: holds a bare backbone, not a SaShiMiLM; cannot generate")
    cfg = model.config
    prime_wave, prime_tokens = load_prime(args.prime, cfg, args.prime_seconds) if args.prime else (None, None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_new = int(round(args.seconds * cfg.sample_rate))
    seeds = [args.seed + i for i in range(args.n)]
    batch = args.batch_size or args.n
    rows, backends, start, step = [], set(), time.perf_counter(), None
    with tqdm(total=args.n * n_new, unit="sample", unit_scale=True, desc="generate") as bar:
        for b0 in range(0, args.n, batch):
            batch_rows, step = _generate_batch(model, seeds[b0 : b0 + batch], settings, prime_tokens, n_new, out,
                                               args, bar, step)
            rows += batch_rows
            backends.add("reference" if args.eager else step.backend)
    elapsed = time.perf_counter() - start
    rows = _finalize(rows, out)
    manifest = _manifest(args, cfg, settings, rows, n_new, prime_tokens, elapsed, "+".join(sorted(backends)))
    atomic_write(out / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n"))
    if args.report:
        prime = None
        if prime_tokens is not None:
            _write_tokens(out / "prime.wav", prime_tokens[None], cfg)
            prime = {"file": "prime.wav", "source": str(args.prime)}
        write_report(out, rows, f"sashimi generate: {args.checkpoint}", prime)
    print(f"wrote {len(rows)} samples to {out} ({manifest['timing']['samples_per_second']:.0f} samples/s, "
          f"{manifest['timing']['real_time_factor']:.2f}x real time overall, including setup)")
    return 0


def _generate_batch(model, seeds, settings, prime, n_new, out: Path, args, bar, like=None) -> tuple[list[dict], Any]:
    """Generate one batch, writing every sequence's WAV as chunks arrive. Returns its manifest rows and the step
    that ran it: a FastLM, whose converted model the next batch reuses (``like``), or the reference step."""
    cfg = model.config
    quant = make_quantizer(cfg.quantization, cfg.bits)
    with _default_threads():  # the step's set-up and the prefill: ~1.6x faster on two cores than on one
        sampler = Sampler(model, seeds, settings, prime=prime, fast=not args.eager, compile=not args.no_compile,
                          backend="eager" if args.no_compile else args.backend, like=like)
    backend = "reference" if args.eager else sampler.backend.backend
    if args.threads and backend == "native":
        sampler.backend.threads = args.threads
    torch.set_num_threads(args.threads or 1)  # the step loop of the torch backends (small ops: 1 is fastest)
    paths = [out / f".seed{s}.partial.wav" for s in seeds]
    wav = lambda path: sf.SoundFile(str(path), "w", cfg.sample_rate, 1, "PCM_16", format="WAV")
    writers = [(wav(p), i) for i, p in enumerate(paths)]  # (file, sequence it gets)
    if args.stream and seeds[0] == args.seed:
        writers.append((wav(args.stream), 0))
    try:
        if prime is not None and len(prime):
            _write_chunk(writers, quant.decode(sampler.prime.cpu()).numpy())
        t0 = time.perf_counter()
        for chunk in sampler.chunks(n_new):
            _write_chunk(writers, quant.decode(chunk.cpu()).numpy())
            bar.update(chunk.numel())
            rate = bar.n / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{rate / cfg.sample_rate:.2f}x real time")
    finally:
        for w, _ in writers:
            w.close()
    return [{"file": p.name, "seed": s, "log_likelihood": float(ll), "bits_per_sample": float(bps),
             "n_generated": n_new} for p, s, ll, bps in zip(paths, seeds, sampler.log_likelihood,
                                                             sampler.bits_per_sample)], sampler.backend


_DEFAULT_THREADS = torch.get_num_threads()  # torch's default for this process (all cores, or OMP_NUM_THREADS)


@contextlib.contextmanager
def _default_threads():
    """torch's default intra-op threads inside the block, the current count restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(_DEFAULT_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_chunk(writers, audio) -> None:
    """audio (B c) floats; flushed so that a player following the file sees every chunk."""
    for w, i in writers:
        w.write(audio[i])
        w.flush()


def _write_tokens(path: Path, tokens: torch.Tensor, cfg) -> None:
    wave = make_quantizer(cfg.quantization, cfg.bits).decode(tokens)[0].numpy()
    sf.write(str(path), wave, cfg.sample_rate, subtype="PCM_16", format="WAV")


def _finalize(rows: list[dict], out: Path) -> list[dict]:
    """Sort by log-likelihood (best first) and rename the partial files to their final names."""
    rows = sorted(rows, key=lambda r: -r["log_likelihood"])
    width = len(str(len(rows)))
    for rank, row in enumerate(rows, 1):
        name = f"{rank:0{width}d}_seed{row['seed']}.wav"
        os.replace(out / row["file"], out / name)
        row["file"] = name
    return rows


def _manifest(args, cfg, settings, rows, n_new, prime_tokens, elapsed, backend: str) -> dict:
    total = len(rows) * n_new
    return {
        "checkpoint": str(args.checkpoint),
        "sample_rate": cfg.sample_rate,
        "quantization": cfg.quantization,
        "bits": cfg.bits,
        "settings": {**settings.to_dict(), "n": args.n, "seconds": args.seconds, "seed": args.seed,
                     "prime": args.prime, "prime_seconds": args.prime_seconds,
                     "prime_samples": 0 if prime_tokens is None else len(prime_tokens),
                     "batch_size": args.batch_size or args.n, "step": "eager" if args.eager else "fast",
                     "backend": backend, "compiled": backend in ("native", "inductor"), "device": args.device},
        "log_likelihood_note": "nats of the generated samples (after the prime) under the model, temperature 1",
        "samples": rows,
        "timing": {"seconds": elapsed, "samples_per_second": total / elapsed,
                   "real_time_factor": total / elapsed / cfg.sample_rate},
    }
