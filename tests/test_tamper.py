"""Tampered and damaged checkpoints: no code ever runs, and nothing crashes.

Every case damages the newest checkpoint (step-10) of a small run. Without `--checkpoint`,
resume, eval and generate skip it for the previous complete one (step-5) and say so; with
`--checkpoint step-10` the command stops with exit 2 naming it. A malicious pickle's marker
file must never appear, and no message ever suggests unsafe loading."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from genlab.cli import main
from genlab.training.loop import train
from testkit import tiny_config

GENLAB = str(Path(sys.executable).with_name("genlab"))


class _Evil:
    """Unpickling this would create the marker file (os.system is never reached: genlab
    loads state with weights-only unpickling)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("tamper")
    run = root / "run"
    corpus = root / "corpus.txt"  # small, so every eval re-splits it quickly
    corpus.write_text("\n\n\n".join(topics[k].strip() for k in sorted(topics)[:30]))
    cfg = tiny_config(
        f"data.source={corpus}",
        "data.dedup.near=false",
        "train.max_steps=10",
        "train.checkpoint_every=5",
        "train.keep_checkpoints=5",
        "train.sample_every=100",
        "guard.healthy_after=0",
    )
    train(cfg, run)
    return run


def _rehash(ckpt: Path) -> None:
    """Rewrite the manifest's hashes to match the (tampered) files, as an attacker would."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"] = {
        name: hashlib.sha256((ckpt / name).read_bytes()).hexdigest() for name in manifest["files"]
    }
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def _evil_state(ckpt: Path, marker: Path) -> None:
    import pickle

    (ckpt / "state.pt").write_bytes(pickle.dumps(_Evil(marker)))
    _rehash(ckpt)


def _flip_weights(ckpt: Path, marker: Path) -> None:
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF  # a weight byte: the header still parses, the hash does not match
    (ckpt / "model.safetensors").write_bytes(bytes(data))


def _truncate_weights(ckpt: Path, marker: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])


def _delete_state(ckpt: Path, marker: Path) -> None:
    (ckpt / "state.pt").unlink()


def _delete_state_and_its_entry(ckpt: Path, marker: Path) -> None:
    (ckpt / "state.pt").unlink()
    manifest = json.loads((ckpt / "manifest.json").read_text())
    del manifest["files"]["state.pt"]
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def _manifest(value: object) -> Callable[[Path, Path], None]:
    def tamper(ckpt: Path, marker: Path) -> None:
        (ckpt / "manifest.json").write_text(json.dumps(value))

    return tamper


def _edit_manifest(**changes: object) -> Callable[[Path, Path], None]:
    def tamper(ckpt: Path, marker: Path) -> None:
        manifest = json.loads((ckpt / "manifest.json").read_text())
        for key, value in changes.items():
            if value is None:
                manifest.pop(key)
            else:
                manifest[key] = value
        (ckpt / "manifest.json").write_text(json.dumps(manifest))

    return tamper


def _rehashed_weights(content: bytes) -> Callable[[Path, Path], None]:
    def tamper(ckpt: Path, marker: Path) -> None:
        (ckpt / "model.safetensors").write_bytes(content)
        _rehash(ckpt)

    return tamper


def _header_bytes(ckpt: Path) -> bytes:
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[10] = 0xFF  # inside the JSON header: no longer UTF-8
    return bytes(data)


def _corrupt_header(ckpt: Path, marker: Path) -> None:
    _rehashed_weights(_header_bytes(ckpt))(ckpt, marker)


def _huge_length_prefix(ckpt: Path, marker: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    _rehashed_weights((2**62).to_bytes(8, "little") + data[8:])(ckpt, marker)


def _pickle_as_weights(ckpt: Path, marker: Path) -> None:
    import pickle

    _rehashed_weights(pickle.dumps(_Evil(marker)))(ckpt, marker)


def _symlink_to_a_system_file(ckpt: Path, marker: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors").symlink_to("/etc/hostname")
    _rehash(ckpt)


CASES = {
    "malicious-pickle-rehashed": _evil_state,
    "flipped-weight-byte": _flip_weights,
    "truncated-weights": _truncate_weights,
    "deleted-state": _delete_state,
    "state-deleted-with-its-entry": _delete_state_and_its_entry,
    "manifest-empty-object": _manifest({}),
    "manifest-a-list": _manifest([]),
    "manifest-step-abc": _edit_manifest(step="abc"),
    "manifest-without-step": _edit_manifest(step=None),
    "manifest-without-files": _edit_manifest(files=None),
    "manifest-files-a-list": _edit_manifest(files=["model.safetensors"]),
    "manifest-other-step": _edit_manifest(step=999),
    "corrupt-header-rehashed": _corrupt_header,
    "huge-length-prefix-rehashed": _huge_length_prefix,
    "pickle-in-safetensors-rehashed": _pickle_as_weights,
    "symlink-to-system-file-rehashed": _symlink_to_a_system_file,
}


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _no_unsafe_advice(text: str) -> None:
    assert "weights_only" not in text and "Traceback" not in text


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_newest_checkpoint_is_skipped_or_refused(case, base_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(base_run, run, symlinks=True)
    marker = tmp_path / "PWNED"
    CASES[case](run / "checkpoints" / "step-10", marker)

    # Asked for by name: refused with exit 2, naming it, and nothing on disk changes.
    before = _snapshot(run)
    step10 = ["--checkpoint", "step-10"]
    assert main(["eval", str(run), "--metrics", "nll", "--num-samples", "2", *step10]) == 2
    err = capsys.readouterr().err
    assert "step-10" in err and err.count("\n") == 1, err
    _no_unsafe_advice(err)
    assert main(["generate", str(run), "--max-new-tokens", "3", *step10]) == 2
    _no_unsafe_advice(capsys.readouterr().err)
    assert _snapshot(run) == before

    # Otherwise: the previous complete checkpoint, with a warning naming the skipped one.
    assert main(["generate", str(run), "--max-new-tokens", "3"]) == 0
    assert main(["eval", str(run), "--metrics", "nll", "--num-samples", "2"]) == 0
    assert json.loads((run / "metrics.json").read_text())["evaluated_step"] == 5
    assert main(["resume", str(run), "train.max_steps=12"]) == 0
    out = capsys.readouterr()
    _no_unsafe_advice(out.err + out.out)
    assert "step-10" in out.err + out.out  # the skip is said, not silent
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # resumed from step 5: 6..12 logged again
    assert not marker.exists()


def test_the_malicious_pickle_runs_nothing_in_fresh_processes(base_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    marker = tmp_path / "PWNED"
    for step in ("step-5", "step-10"):
        _evil_state(run / "checkpoints" / step, marker)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in (
        ["resume", run, "train.max_steps=12"],
        ["eval", run, "--metrics", "nll", "--num-samples", "2"],
        ["generate", run, "--max-new-tokens", "3"],
        ["eval", run, "--checkpoint", run / "checkpoints" / "step-5"],
    ):
        done = subprocess.run(
            [GENLAB, *map(str, args)], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, done.stderr
        # Each skipped checkpoint is a warning line; the last line is the one error.
        *warned, error = done.stderr.strip().splitlines()
        assert all(line.startswith("genlab: warning: skipped checkpoint") for line in warned)
        assert error.startswith("genlab: error:") and "unusable" in done.stderr
        _no_unsafe_advice(done.stderr)
    assert not marker.exists()
