"""Probes of bad input and operating-system faults, as a user meets them through the CLI (issue 19).

Each fault must end in exit code 2 and one line `sashimi CMD: error: ...` that names the path and the cause,
never a traceback, and must leave every file the user had before the command as it was. Faults are real where
a test can make them without privileges (RLIMIT_FSIZE, RLIMIT_NOFILE, undecodable names, link loops) and
injected at the write otherwise (tests run as root, so chmod does not make a folder read-only).
"""
import errno
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import sashimi
from sashimi.cli.main import main
from sashimi.data.synthetic import make_long_recordings
from tests.train.conftest import make_tone_dataset, tiny_overrides

BAD_NAME = "zero/spk\udcff_nohash_0.wav"  # the byte 0xff: not UTF-8
LOOP = "one/loop_nohash_0.wav"  # a symbolic link to itself


# ---------------------------------------------------------------- helpers


def error_line(capsys, code: int, command: str, *fragments: str) -> str:
    """Assert exit code 2 and exactly one error line naming every fragment, and no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"sashimi {command}: error: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(*paths: Path) -> dict[str, tuple[str, int]]:
    """(content hash, mode) of every file under the given folders/files."""
    out = {}
    for top in paths:
        for p in sorted([top] if top.is_file() else top.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def run_files(run: Path) -> list[Path]:
    """What a run holds that a resume must not lose: its checkpoints and exported model (config.yaml is
    rewritten by every resume, with its overrides)."""
    return [p for p in (run / "checkpoints", run / "model") if p.exists()]


@contextmanager
def rlimit(kind: int, soft: int):
    old = resource.getrlimit(kind)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so an oversized write fails with EFBIG
    resource.setrlimit(kind, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(kind, old)
        signal.signal(signal.SIGXFSZ, handler)


def fail_checkpoint_writes(monkeypatch, code: int) -> None:
    """Make every write under checkpoints/ fail with OSError(code), the way mkstemp would report it."""
    import sashimi.train.callbacks as callbacks

    real = callbacks.atomic_write

    def atomic_write(path, write):
        if Path(path).parent.name == "checkpoints":
            raise OSError(code, os.strerror(code), str(Path(path).parent / f".{Path(path).name}.k2j4h1x_.tmp"))
        return real(path, write)

    monkeypatch.setattr(callbacks, "atomic_write", atomic_write)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory) -> Path:
    """The tone dataset of tests/train plus a clip whose name is not UTF-8 and a symbolic-link loop."""
    root = make_tone_dataset(tmp_path_factory.mktemp("odd"), n_speakers=6)
    shutil.copy(root / "zero" / "spk0002_nohash_0.wav", root / BAD_NAME)
    (root / LOOP).symlink_to(Path(LOOP).name)
    return root


def tiny(root: Path, **extra) -> list[str]:
    return ["demo", *tiny_overrides(root, **extra)]


@pytest.fixture(scope="module")
def base_run(odd_root, tmp_path_factory) -> Path:
    """A finished 2-step run (with best.ckpt) trained on the odd dataset; copy it before changing it."""
    run = tmp_path_factory.mktemp("base") / "run"
    args = tiny(odd_root, **{"trainer.max_steps": 2, "trainer.val_every": 2, "trainer.checkpoint_every": 1})
    assert main(["train", *args, "--run-dir", str(run)]) == 0
    return run


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base_run, run, symlinks=True)
    return run


# ---------------------------------------------------------------- datasets: one odd file is one bad file


def test_training_skips_undecodable_names_and_link_loops(odd_root, base_run):
    bad = (odd_root / ".sashimi_cache" / "sc09-16000hz" / "bad_files.txt").read_text(encoding="utf-8")
    assert "zero/spk\\xff_nohash_0.wav\t" in bad and "not valid UTF-8" in bad
    assert f"{LOOP}\t" in bad and "symbolic link loop" in bad
    assert (base_run / "model" / "model.safetensors").is_file()


def test_data_info_and_strict(odd_root, capsys):
    before = snapshot(odd_root)
    assert main(["data", "info", str(odd_root), "--sample-len", "512"]) == 0
    assert "files: 60 usable, 2 bad" in capsys.readouterr().out
    error_line(capsys, main(["data", "info", str(odd_root), "--sample-len", "512", "--strict"]), "data",
               "2 bad audio file(s)", "(strict mode); first: ", "symbolic link loop")
    assert snapshot(odd_root) == before


def test_prepare_from_a_folder_with_odd_names(tmp_path, capsys):
    src = tmp_path / "src"
    make_long_recordings(src, [3000] * 5)
    shutil.copy(src / "track000.wav", src / "caf\udce9.wav")  # Latin-1 "café"
    (src / "loop.wav").symlink_to("loop.wav")
    before = snapshot(src)
    assert main(["data", "prepare", "youtubemix", "--root", str(tmp_path / "ym"), "--source", str(src),
                 "--sample-len", "1024"]) == 0
    out = capsys.readouterr().out
    assert "files: 5 usable, 1 bad" in out  # the copy with the odd name; the loop is not audio to copy
    assert snapshot(src) == before
    error_line(capsys, main(["data", "prepare", "youtubemix", "--root", str(tmp_path / "ym"), "--strict",
                             "--sample-len", "1024"]), "data", "caf\\xe9.wav", "not valid UTF-8")


# ---------------------------------------------------------------- config values, before any run folder


@pytest.mark.parametrize("override, message", [
    ("optim.lr=.nan", "optim.lr: expected a finite number, got nan"),
    ("optim.lr=.inf", "optim.lr: expected a finite number, got inf"),
    ("optim.lr=0", "optim.lr must be a finite number > 0"),
    ("optim.grad_clip=-1", "optim.grad_clip must be a finite number > 0 (or null for no clipping), got -1.0"),
    ("optim.grad_clip=0", "optim.grad_clip must be a finite number > 0"),
    ("optim.betas=[0.9,1.5]", "optim.betas must be two numbers in [0, 1)"),
    ("model.dropout=.nan", "model.dropout: expected a finite number"),
    ("model.dropout=1", "model.dropout must be in [0, 1)"),
    ("model.dt_min=0.5", "0 < dt_min <= dt_max"),
    ("schedule.min_lr_ratio=2", "schedule.min_lr_ratio must be in [0, 1]"),
    ("model.d_model=8192", "million parameters, which needs about"),
])
def test_bad_values_are_one_line_and_leave_no_run_folder(override, message, odd_root, tmp_path, capsys):
    code = main(["train", *tiny(odd_root), override, "--run-dir", str(tmp_path / "run")])
    line = error_line(capsys, code, "train", message)
    if "d_model" in override:
        assert "lower model.d_model" in line and "GiB" in line
    assert not (tmp_path / "run").exists()


def test_model_size_estimate_is_the_parameter_count():
    from sashimi.models.config import preset
    from sashimi.train.config import load_config
    from sashimi.train.run import check_model_size

    for kw in ({}, {"layer": "s4d"}, {"unet": True}, {"ff": 0, "pool": (2,), "expand": 3, "bits": 4}):
        config = preset("tiny", **kw)
        assert config.estimate_parameters() == sum(p.numel() for p in sashimi.SaShiMiLM(config).parameters())
    config = load_config("demo")  # 110,576 parameters: 1.7 MB to train in float32
    check_model_size(config, memory=2 * 2**20)
    with pytest.raises(sashimi.errors.ConfigError, match="this machine has 1 GiB"):
        check_model_size(load_config("demo", ["model.d_model=2048"]), memory=2**30)


# ---------------------------------------------------------------- operating-system faults while training


@pytest.mark.parametrize("where", ["run dir", "checkpoints"])
def test_read_only_run_dir_is_found_before_training(where, odd_root, tmp_path, capsys, monkeypatch):
    import tempfile

    run = tmp_path / "ro" / "run"
    read_only = OSError(errno.EROFS, "Read-only file system")
    if where == "run dir":  # the parent is read-only: creating the run folder fails
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if str(path).startswith(str(run)):  # as the kernel answers: a missing parent first
                code = errno.EROFS if Path(path).parent.is_dir() else errno.ENOENT
                raise OSError(code, os.strerror(code), str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
        expect = f"read-only file system while creating {run}; choose a writable --run-dir"
    else:  # the folders exist, but no new file can be made in checkpoints/
        (run / "checkpoints").mkdir(parents=True)
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, **kwargs):
            if str(kwargs.get("dir", "")).endswith("checkpoints"):
                raise read_only
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        expect = f"read-only file system while creating a file in {run / 'checkpoints'}; choose a writable --run-dir"
    error_line(capsys, main(["train", *tiny(odd_root), "--run-dir", str(run)]), "train", expect)
    assert not (run / "config.yaml").exists()  # nothing started


@pytest.mark.parametrize("code, cause, fix", [
    (errno.EROFS, "read-only file system", "make the folder writable"),
    (errno.ENOSPC, "no space left on device", "free space"),
    (errno.EMFILE, "too many open files (limit", "raise the limit (ulimit -n) or lower trainer.num_workers"),
])
def test_checkpoint_write_fault_after_training_started(code, cause, fix, odd_root, tmp_path, capsys, monkeypatch):
    fail_checkpoint_writes(monkeypatch, code)
    run = tmp_path / "run"
    args = tiny(odd_root, **{"trainer.max_steps": 2, "trainer.checkpoint_every": 1})
    error_line(capsys, main(["train", *args, "--run-dir", str(run)]), "train",
               f"{cause}", f"while writing {run / 'checkpoints' / 'last.ckpt'}; {fix} and run again")
    assert (run / "config.yaml").is_file() and not list((run / "checkpoints").iterdir())


def test_full_disk_at_a_save_keeps_the_checkpoints_and_resume_goes_on(run_copy, capsys):
    before = snapshot(*run_files(run_copy))
    with rlimit(resource.RLIMIT_FSIZE, 256 * 1024):  # a real write error: the checkpoint is ~1.5 MB
        code = main(["train", "--resume", str(run_copy), "trainer.max_steps=3"])
    last = run_copy / "checkpoints" / "last.ckpt"
    error_line(capsys, code, "train", f"file too large for this process's file-size limit while writing {last}; "
               f"raise the limit (ulimit -f) and resume with --resume {run_copy}")
    assert snapshot(*run_files(run_copy)) == before  # intact, and no temporary file left
    # a save killed outright leaves its temporary file: the next start removes it (and nothing else)
    orphans = [run_copy / "checkpoints" / ".last.ckpt.x7_a9k2q.tmp", run_copy / ".config.yaml.abcdefgh.tmp"]
    for p in orphans:
        p.write_bytes(b"half a checkpoint")
    keep = run_copy / "checkpoints" / "notes.tmp"
    keep.write_text("the user's")
    old_umask = os.umask(0o027)
    try:
        assert main(["train", "--resume", str(run_copy), "trainer.max_steps=3"]) == 0
    finally:
        os.umask(old_umask)
    assert not any(p.exists() for p in orphans) and keep.read_text() == "the user's"
    for p in (run_copy / "config.yaml", run_copy / "checkpoints" / "last.ckpt", run_copy / "model" / "config.json",
              run_copy / "model" / "model.safetensors"):
        assert p.stat().st_mode & 0o777 == 0o640, p  # 0o666 less the umask, not mkstemp's 0o600


def test_a_failed_export_is_written_by_resume(run_copy, capsys, monkeypatch):
    import sashimi.train.callbacks as callbacks

    def no_space(model, path):  # what safetensors raises on a full disk
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(callbacks, "save_model", no_space)
    code = main(["train", "--resume", str(run_copy), "trainer.max_steps=3"])
    error_line(capsys, code, "train", f"no space left on device while writing {run_copy / 'model'}; "
               f"free space and resume with --resume {run_copy}")
    monkeypatch.undo()
    assert main(["train", "--resume", str(run_copy)]) == 0  # step 3 of 3: only the export is written
    ckpt = torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    for k, v in sashimi.load_model(run_copy / "model").state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][f"model.{k}"]), k
    code = main(["train", "--resume", str(run_copy)])
    error_line(capsys, code, "train", "already at step 3")


def test_truncated_last_checkpoint_points_to_best(run_copy, capsys):
    last = run_copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    before = snapshot(*run_files(run_copy))
    error_line(capsys, main(["train", "--resume", str(run_copy)]), "train", f"{last}: not a readable",
               f"copy {run_copy / 'checkpoints' / 'best.ckpt'} over it and resume")
    assert snapshot(*run_files(run_copy)) == before


# ---------------------------------------------------------------- real limits and mounts, in a child process


def _cli(args, *, preexec=None, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "sashimi", *args], capture_output=True, text=True,
                          timeout=600, preexec_fn=preexec, cwd=Path(__file__).resolve().parents[1])


def _one_line(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("sashimi train: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in line, line


def test_too_many_open_files_with_loader_workers(odd_root, tmp_path):
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (12, 12))

    run = tmp_path / "run"
    proc = _cli(["train", *tiny(odd_root, **{"trainer.num_workers": 2}), "--run-dir", str(run)], preexec=limit)
    _one_line(proc, "too many open files (limit 12)", "raise the limit (ulimit -n) or lower trainer.num_workers")


def _namespace_mount_works() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("options, fragments", [
    ("ro,size=1m", ["read-only file system while creating", "choose a writable --run-dir"]),
    ("size=1m", ["no space left on device while writing", "last.ckpt; free space and run again"]),
])
def test_real_read_only_and_full_tmpfs(options, fragments, odd_root, tmp_path):
    if not _namespace_mount_works():
        pytest.skip("needs `unshare -rm` and tmpfs mounts in a user namespace")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f'mount -t tmpfs -o {options} tmpfs "{mnt}" && exec "$@"')
    proc = _cli(["train", *tiny(odd_root), "--run-dir", str(mnt / "run")],
                prefix=("unshare", "-rm", "sh", "-c", script, "sh"))
    _one_line(proc, *fragments)
