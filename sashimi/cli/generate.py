"""`sashimi generate`: sample audio from a checkpoint, write WAVs sorted by likelihood, a manifest and a report.

A diffusion model (``model.kind: diffwave``) is sampled by ``sashimi.cli.generate_diffusion`` instead."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from sashimi.audio.quantize import make_quantizer
from sashimi.cli.options import device
from sashimi.errors import OS_FAULTS, CheckpointError, ConfigError
from sashimi.generation import native
from sashimi.generation.backends import BACKENDS
from sashimi.generation.guidance import check_guidance
from sashimi.generation.labels import label_of, parse_labels
from sashimi.generation.output import JOURNAL, OutputFolder
from sashimi.generation.prime import load_prime
from sashimi.generation.report import classifier_heard, write_report
from sashimi.generation.sampler import PREFILL_CONV_SAMPLES, Sampler
from sashimi.generation.sampling import SamplingSettings
from sashimi.models.diffwave import DiffWave
from sashimi.models.io import load_model
from sashimi.models.lm import SaShiMiLM


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="sample audio from a trained model",
                              description="Sample audio from a trained model. Autoregressive models: in recurrent "
                              "mode, WAVs sorted by log-likelihood. Diffusion models (DiffWave): ancestral DDPM "
                              "sampling over all diffusion steps, or deterministic DDIM with --steps S.")
    p.add_argument("checkpoint", help="model checkpoint (.safetensors file or directory)")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds to generate per sample (default 4)")
    p.add_argument("--steps", type=int, help="diffusion models: DDIM with this many network evaluations instead of "
                   "ancestral DDPM over all T steps (the default), e.g. 50")
    p.add_argument("--temperature", type=float, help="> 0; logits are divided by it (default 1)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass in (0, 1] (default 1 = off)")
    p.add_argument("--top-k", type=int, help="keep the k most likely tokens (default 0 = off)")
    p.add_argument("--label", help="conditional models (e.g. digits-m1): the label(s) to say, comma-separated "
                   "(e.g. seven or zero,one: taken in turn); default: every label in turn")
    p.add_argument("--guidance", type=float, help="conditional models trained with label dropout "
                   "(model.label_dropout > 0): sample from l_u + W (l_c - l_u), W > 1 leaning on the label (twice the compute; "
                   "default: off, plain conditional sampling)")
    p.add_argument("--prime", help="mono audio file at the model's sample rate to continue")
    p.add_argument("--prime-seconds", type=float, help="use only the first seconds of --prime")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED+i")
    p.add_argument("--out", default="generated", help="output folder (default ./generated)")
    p.add_argument("--stream", help="also write the first sample to this WAV while it is generated")
    p.add_argument("--report", action="store_true", help="write OUT/index.html with players and plots")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out with the same settings: finished samples are kept")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the sample set already in --out (and an existing --stream file)")
    p.add_argument("--batch-size", type=int, help="sequences generated together (default: all of --n)")
    p.add_argument("--threads", type=int, help="CPU threads of the step (default: 2 for the native step where "
                   "the process has 2+ CPUs, 1 for the torch backends; use 1 on a CPU busy with other work)")
    p.add_argument("--device", type=device, default="cpu",
                   help="cpu (default), cuda or cuda:N: where the model runs; on a GPU the step is replayed as "
                   "CUDA graphs")
    p.add_argument("--backend", choices=BACKENDS,
                   help="the recurrent step: native (default on CPU: the fused C++ step, built once with the system "
                   "compiler, falling back to inductor, then eager, with a warning), inductor (the default on a "
                   "GPU), eager (the torch fast step, uncompiled) or reference (SaShiMiLM.step itself, slow)")
    p.add_argument("--weights", choices=("float32", "bf16"), default="float32",
                   help="Linear weights as bfloat16 (float32 accumulation): the native step's (faster where the step "
                   "is bound by streaming weights, e.g. batch 1), or a diffusion model's Linear layers (faster for "
                   "wide models on CPUs with AVX-512 BF16); float32, the default, is the reference")
    p.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)  # renamed: a clear error
    p.add_argument("--no-compile", action="store_true", help=argparse.SUPPRESS)
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
    if args.eager or args.no_compile:
        flag = "--eager" if args.eager else "--no-compile"
        raise ConfigError(f"{flag} is gone: use --backend reference (SaShiMiLM.step) or --backend eager (the fast "
                          "step, uncompiled)")
    if args.backend == "native" and torch.device(args.device).type != "cpu":
        raise ConfigError(f"--backend native runs on the CPU; with --device {args.device} use --backend inductor "
                          "or eager")


def run(args) -> int:
    threads = torch.get_num_threads()  # the step loop sets its own; a caller of main() gets its count back
    try:
        return _run_command(args)
    finally:
        torch.set_num_threads(threads)


def _run_command(args) -> int:
    _validate(args)
    model = load_model(args.checkpoint, map_location=args.device)
    if isinstance(model, DiffWave):
        if args.label is not None or args.guidance is not None:
            flag = "--label" if args.label is not None else "--guidance"
            raise ConfigError(f"{flag}: this diffusion model is unconditional (it has no labels); leave {flag} out")
        from sashimi.cli.generate_diffusion import run_diffusion

        return run_diffusion(args, model)
    if args.steps is not None:
        raise ConfigError("--steps applies to diffusion models (model.kind: diffwave); this model is autoregressive")
    try:
        settings = SamplingSettings(_or(args.temperature, 1.0), _or(args.top_p, 1.0), _or(args.top_k, 0))
    except ConfigError as err:
        raise ConfigError(f"--{str(err).replace('_', '-')}") from None
    if args.stream and Path(args.stream).exists() and not args.overwrite:
        raise ConfigError(f"--stream {args.stream}: the file exists; pass --overwrite to replace it")
    if not isinstance(model, SaShiMiLM):
        raise CheckpointError(f"{args.checkpoint}: holds a bare backbone, not a SaShiMiLM; cannot generate")
    cfg = model.config
    args.labels = parse_labels(args.label, cfg.labels)
    if args.guidance is not None:
        try:
            check_guidance(model, args.guidance)
        except ConfigError as err:
            raise ConfigError(f"--guidance: {err}") from None
    prime_wave, prime_tokens = load_prime(args.prime, cfg, args.prime_seconds) if args.prime else (None, None)
    n_new = int(round(args.seconds * cfg.sample_rate))
    if n_new < 1:
        raise ConfigError(f"--seconds {args.seconds} is less than one sample at the model's {cfg.sample_rate} Hz; "
                          f"use at least {1 / cfg.sample_rate:.3g}")
    try:
        return _run(args, model, settings, prime_tokens, n_new)
    except OSError as err:  # a full disk, a read-only folder, too many open files: one line, not a traceback
        raise ConfigError(os_error_message(err, args)) from None


def _or(value, default):
    """An option's value, or its default where it was not given (None)."""
    return default if value is None else value


def os_error_message(err: OSError, args) -> str:
    """One line for an OS fault while writing the samples: cause, file, fix, and how to go on."""
    cause, fix = OS_FAULTS.get(err.errno, (err.strerror or str(err), "fix it"))
    where = f" while writing {err.filename}" if err.filename else f" while writing to {args.out}"
    journal = Path(args.out) / JOURNAL
    then = "continue with --resume (the samples finished so far are kept)" if journal.is_file() else "run again"
    return f"{cause}{where}; {fix} and {then}"


def _run(args, model, settings, prime_tokens, n_new) -> int:
    cfg = model.config
    out = OutputFolder(args.out, _identity(args, settings), resume=args.resume, overwrite=args.overwrite)
    seeds = [args.seed + i for i in range(args.n) if args.seed + i not in out.finished_seeds]
    batch = args.batch_size or args.n
    backends, start, step = set(), time.perf_counter(), None
    total = args.n * n_new
    # the bar's [elapsed<remaining] is the ETA of the whole set; a resumed run starts at what is done
    with tqdm(total=total, initial=total - len(seeds) * n_new, unit="sample", unit_scale=True, desc="generate") as bar:
        for b0 in range(0, len(seeds), batch):
            step = _generate_batch(model, seeds[b0 : b0 + batch], settings, prime_tokens, n_new, out, args, bar, step)
            backends.add(step.backend)
    elapsed = time.perf_counter() - start
    generated = len(seeds) * n_new
    manifest = _manifest(args, cfg, settings, n_new, prime_tokens, elapsed, generated, "+".join(sorted(backends)))
    rows = out.finalize(manifest)
    if args.report:
        prime = None
        if prime_tokens is not None:
            _write_tokens(out.folder / "prime.wav", prime_tokens[None], cfg)
            prime = {"file": "prime.wav", "source": str(args.prime)}
        write_report(out.folder, rows, f"sashimi generate: {args.checkpoint}", prime,
                     heard=classifier_heard(out.folder, rows, cfg.sample_rate))
    kept = f", {args.n - len(seeds)} kept from the interrupted run" if len(seeds) < args.n else ""
    print(f"wrote {len(rows)} samples to {out.folder} ({manifest['timing']['samples_per_second']:.0f} samples/s, "
          f"{manifest['timing']['real_time_factor']:.2f}x real time overall, including setup{kept})")
    return 0


def _identity(args, settings) -> dict:
    """What decides the audio of a run: a resumed run must repeat it (the batch size may change)."""
    return {"checkpoint": str(args.checkpoint), **settings.to_dict(), "n": args.n, "seconds": args.seconds,
            "seed": args.seed, "prime": args.prime, "prime_seconds": args.prime_seconds,
            **({"label": args.label} if args.label else {}),
            **({"guidance": args.guidance} if args.guidance is not None else {})}


def _generate_batch(model, seeds, settings, prime, n_new, out: OutputFolder, args, bar, like=None):
    """Generate one batch into the folder's scratch file, then write its WAVs. Returns the step that ran it:
    a FastLM, whose converted model the next batch reuses (``like``), or the reference step."""
    cfg = model.config
    quant = make_quantizer(cfg.quantization, cfg.bits)
    threads, chunked = _step_threads(args), _env_flag("SASHIMI_NATIVE_CHUNK", True)
    stepped = 0 if prime is None else len(prime) - PREFILL_CONV_SAMPLES // len(seeds)
    if stepped > 0:  # tqdm's bar has not started yet: say why nothing moves for a while
        print(f"priming: the last {stepped / cfg.sample_rate:.1f} s of the prime go through the recurrent step "
              "(bounded memory); this takes a while", file=sys.stderr, flush=True)
    names = [label_of(s, args.seed, cfg.labels, args.labels) for s in seeds] if cfg.labels else None
    with _default_threads():  # the step's set-up and the prefill: ~1.6x faster on two cores than on one
        # the torch steps are compiled for, and run on, the loop's threads (backends.make_step)
        sampler = Sampler(model, seeds, settings, prime=prime, backend=args.backend, threads=threads,
                          chunked=chunked, like=like, weights=args.weights,
                          labels=None if names is None else [cfg.labels.index(n) for n in names],
                          guidance=args.guidance)
    torch.set_num_threads(1 if sampler.backend.backend == "native" else sampler.backend.threads)
    n_prime = 0 if prime is None else len(prime)
    scratch = out.scratch(len(seeds), n_prime + n_new)  # (B, T) int16: one open file whatever B is
    stream = _stream_writer(args.stream, cfg) if args.stream and seeds[0] == args.seed else None
    try:
        position = 0
        if n_prime:
            position = _put(scratch, stream, quant.decode(sampler.prime.cpu()).numpy(), position)
        t0 = time.perf_counter()
        for chunk in sampler.chunks(n_new):
            position = _put(scratch, stream, quant.decode(chunk.cpu()).numpy(), position)
            bar.update(chunk.numel())
            rate = (position - n_prime) * len(seeds) / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{rate / cfg.sample_rate:.2f}x real time")
        scratch.flush()
        rows = [{"seed": s, "log_likelihood": float(ll), "bits_per_sample": float(bps), "n_generated": n_new}
                for s, ll, bps in zip(seeds, sampler.log_likelihood, sampler.bits_per_sample)]
        for row, name in zip(rows, names or []):
            row["label"] = name
        out.finish_batch(scratch, rows, cfg.sample_rate)
    finally:
        if stream is not None:
            stream.close()
        del scratch
        out.drop_scratch()
    return sampler.backend


def _stream_writer(path: str, cfg) -> sf.SoundFile:
    try:
        return sf.SoundFile(str(path), "w", cfg.sample_rate, 1, "PCM_16", format="WAV")
    except (sf.LibsndfileError, OSError) as err:
        raise ConfigError(f"--stream {path}: cannot write there ({err})") from None


def pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] (clipped outside) -> int16 PCM, the samples of the WAVs."""
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def _put(scratch, stream, audio, position: int) -> int:
    """audio (B c) floats -> int16 PCM into the scratch at ``position`` (and the stream, flushed)."""
    pcm = pcm16(audio)
    scratch[:, position:position + pcm.shape[1]] = pcm
    if stream is not None:
        stream.write(pcm[0])
        stream.flush()
    return position + pcm.shape[1]


_DEFAULT_THREADS = torch.get_num_threads()  # torch's default for this process (all cores, or OMP_NUM_THREADS)


def _step_threads(args) -> int:
    """--threads, else for the native step SASHIMI_NATIVE_THREADS or its default (2 where the process has 2
    CPUs), else 1 for the torch steps' loop (small ops: 1 thread is fastest)."""
    if args.threads:
        return args.threads
    if args.backend in (None, "native") and torch.device(args.device).type == "cpu":
        value = os.environ.get("SASHIMI_NATIVE_THREADS", "").strip()
        return min(int(value), native.MAX_THREADS) if value.isdigit() and int(value) >= 1 else native.default_threads()
    return 1


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value not in ("0", "false", "no", "off")


@contextlib.contextmanager
def _default_threads():
    """torch's default intra-op threads inside the block, the current count restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(_DEFAULT_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_tokens(path: Path, tokens: torch.Tensor, cfg) -> None:
    wave = make_quantizer(cfg.quantization, cfg.bits).decode(tokens)[0].numpy()
    sf.write(str(path), wave, cfg.sample_rate, subtype="PCM_16", format="WAV")


def _manifest(args, cfg, settings, n_new, prime_tokens, elapsed, generated: int, backend: str) -> dict:
    return {
        "checkpoint": str(args.checkpoint),
        "sample_rate": cfg.sample_rate,
        "quantization": cfg.quantization,
        "bits": cfg.bits,
        "settings": {**settings.to_dict(), "n": args.n, "seconds": args.seconds, "seed": args.seed,
                     "prime": args.prime, "prime_seconds": args.prime_seconds, "label": args.label,
                     "guidance": args.guidance,
                     "prime_samples": 0 if prime_tokens is None else len(prime_tokens),
                     "batch_size": args.batch_size or args.n, "step": "reference" if backend == "reference" else "fast",
                     "backend": backend, "compiled": backend in ("native", "inductor"), "device": args.device,
                     "weights": args.weights if backend == "native" else "float32"},
        "log_likelihood_note": "nats of the generated samples (after the prime) under the model, temperature 1",
        "timing": {"seconds": elapsed, "samples_generated": generated, "samples_per_second": generated / elapsed,
                   "real_time_factor": generated / elapsed / cfg.sample_rate,
                   "note": "this invocation only (a resumed run counts what it generated itself)"},
    }
