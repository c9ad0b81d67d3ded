"""Bad input through the real `genlab` command, by class: each ends in exit 2 (3 for a run the
guard stops) with one line naming the problem, never a traceback or a hang, and a run
directory that existed before is byte for byte the same afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genlab.training.loop import train
from testkit import SYS_TAKES_NO_WRITES, immutable, needs_sys, tiny_config

GENLAB = str(Path(sys.executable).with_name("genlab"))
ROOT = Path(__file__).resolve().parents[1]


def genlab(*args: object, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENLAB_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run(
        [GENLAB, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(done: subprocess.CompletedProcess, code: int = 2, *words: str) -> None:
    assert done.returncode == code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("genlab: error:")]
    assert len(lines) == 1 and len(lines[0]) <= 300, done.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("hardening")
    (root / "corpus.txt").write_text("\n\n\n".join(topics[k].strip() for k in sorted(topics)[:30]))
    (root / "empty.yaml").write_text("name: hard\n")
    return root


@pytest.fixture(scope="module")
def existing_run(workdir: Path) -> Path:
    """A finished run that every failing command below must leave untouched."""
    run = workdir / "run"
    cfg = tiny_config(
        f"data.source={workdir / 'corpus.txt'}", "data.dedup.near=false", "train.max_steps=10"
    )
    train(cfg, run)
    return run


YAML_FILES = {
    "self-reference": ("junk: &a [*a]\n", "contains itself"),
    "nested-600-deep": ("x: " + "[" * 600 + "]" * 600 + "\n", "levels deep"),
    "alias-bomb": (
        "\n".join(
            [f"a: &a [{', '.join(['lol'] * 9)}]"]
            + [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
            + ["name: *i"]
        ),
        "expands to more than",
    ),
    "not-yaml": ("data: {source: [\n", "not valid YAML"),
    "a-list": ("- a\n- b\n", "must hold a mapping"),
}


@pytest.mark.parametrize("case", sorted(YAML_FILES))
def test_hostile_config_files(case, workdir, existing_run):
    text, words = YAML_FILES[case]
    path = workdir / f"{case}.yaml"
    path.write_text(text)
    before = snapshot(existing_run)
    done = genlab("train", path, "--run-dir", existing_run, cwd=workdir, timeout=60)
    assert_one_line_error(done, 2, words)
    assert snapshot(existing_run) == before


def test_a_run_whose_config_is_an_alias_bomb_never_hangs_runs_compare_or_report(
    workdir, existing_run
):
    """A run's config.yaml is read with the same bounds as a config file: an alias bomb
    (9^9 values in a few lines) used to make `genlab runs`, `compare` and `report` walk it
    for ever; now the run's config reads as unreadable and each command finishes."""
    bomb = workdir / "bomb-run"
    shutil.copytree(existing_run, bomb)
    (bomb / "config.yaml").write_text(YAML_FILES["alias-bomb"][0])
    listed = genlab("runs", workdir, cwd=workdir, timeout=60)
    assert listed.returncode == 0 and "bomb-run" in listed.stdout, listed.stderr[-2000:]
    compared = genlab("compare", existing_run, bomb, "--out", workdir / "c.html", cwd=workdir,
                      timeout=60)  # fmt: skip
    assert compared.returncode == 0 and (workdir / "c.html").is_file(), compared.stderr[-2000:]
    reported = genlab("report", bomb, cwd=workdir, timeout=60)
    assert reported.returncode == 0 and (bomb / "report.html").is_file(), reported.stderr[-2000:]


OVERRIDES = {
    "split-an-int": (["data.split=7"], "data.split"),
    "split-a-list": (["data.split=[0.1]"], "data.split"),
    "seed-2^64": (["seed=18446744073709551616"], "seed"),
    "threads-2^64": (["train.threads=18446744073709551616"], "train.threads"),
    "lr-inf": (["optim.lr=.inf"], "optim.lr"),
    "lr-1e308": (["optim.lr=1e308"], "optim.lr"),
    "init-std-inf": (["model.init_std=.inf"], "model.init_std"),
    "init-std-1e30": (["model.init_std=1e30"], "model.init_std"),
    "vocab-1e9": (["data.tokenizer=bpe", "data.vocab_size=1000000000"], "data.vocab_size"),
    "grad-accum-uneven": (["train.grad_accum=3"], "train.grad_accum=3"),
    "name-escapes-runs": (["name=../../etc"], "name"),
    "tune-step-inf": (
        ["tune.space={optim.lr: {type: float, low: 0.1, high: 1, step: .inf}}"],
        "tune.space",
    ),
}


@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_valid_looking_values_that_used_to_crash(case, workdir, existing_run):
    overrides, words = OVERRIDES[case]
    before = snapshot(existing_run)
    done = genlab("train", "empty.yaml", *overrides, "--run-dir", workdir / case, cwd=workdir)
    assert_one_line_error(done, 2, words)
    assert not (workdir / case).exists() and snapshot(existing_run) == before


def test_image_runs_refuse_grad_accum(workdir):
    done = genlab("train", ROOT / "examples/digits-vae.yaml", "train.grad_accum=2", cwd=workdir)
    assert_one_line_error(done, 2, "train.grad_accum")


def test_run_directories_that_cannot_be_made(workdir):
    (workdir / "afile").write_text("x")
    done = genlab("train", "empty.yaml", "--run-dir", "afile/sub", cwd=workdir)
    assert_one_line_error(done, 2, "is a file")
    if SYS_TAKES_NO_WRITES:
        done = genlab("train", "empty.yaml", "--run-dir", "/sys/genlab-run", cwd=workdir)
        assert_one_line_error(done, 2, "/sys/genlab-run")


@needs_sys
@pytest.mark.parametrize(
    "command",
    [
        ["export", "RUN", "--format", "onnx", "--out", "/sys/genlab-export"],
        ["report", "RUN", "--out", "/sys/genlab-report.html"],
        ["compare", "RUN", "RUN", "--out", "/sys/genlab-compare.html"],
        ["compress", "RUN", "compress.quantize=int8_dynamic", "--out", "/sys/genlab-compress"],
    ],
    ids=lambda c: c[0],
)
def test_an_out_where_nothing_can_be_written_is_one_line_before_the_work(
    command, workdir, existing_run
):
    """/sys takes no new files, not even from root, whose permission bits allow them: tried
    first, so the export is not built (nor the page drawn, nor the model compressed) to end
    in a traceback."""
    before = snapshot(existing_run)
    done = genlab(*[existing_run if a == "RUN" else a for a in command], cwd=workdir)
    assert_one_line_error(done, 2, "'/sys' takes no writes", "pass --out with a writable")
    assert snapshot(existing_run) == before


@pytest.mark.parametrize(
    "command",
    [["report", "RUN"], ["compress", "RUN", "compress.quantize=int8_dynamic"]],
    ids=lambda c: c[0],
)
def test_a_default_out_in_a_run_that_takes_no_writes_names_the_default(
    command, workdir, existing_run, tmp_path
):
    """Without --out, report writes RUN/report.html and compress RUN/compressed/<name>: on
    a run that takes no writes the one line says the default cannot be written and to pass
    --out, instead of quoting '--out RUN' as if the user had typed it."""
    run = tmp_path / "immutable-run"
    shutil.copytree(existing_run, run)
    with immutable(run):
        before = snapshot(run)
        done = genlab(*[run if a == "RUN" else a for a in command], cwd=workdir)
        assert_one_line_error(done, 2, "the default --out cannot be written", "takes no writes")
        assert "--out '" not in done.stderr and str(run) in done.stderr
        assert snapshot(run) == before


def test_eval_of_a_run_that_takes_no_writes_is_one_line_before_the_work(workdir, existing_run):
    """genlab eval merges its results into the run: a run directory that takes no writes (a
    read-only mount) is refused first, not after the evaluation with a traceback."""
    run = workdir / "immutable-run"
    shutil.copytree(existing_run, run)
    with immutable(run):
        before = snapshot(run)
        done = genlab("eval", run, cwd=workdir)
        assert_one_line_error(done, 2, "takes no writes", "copy the run to a writable folder")
        assert snapshot(run) == before


@pytest.mark.parametrize("frozen", [".", "checkpoints"], ids=["run", "its checkpoints"])
def test_resume_of_a_run_that_takes_no_writes_is_one_line_before_the_work(
    frozen, workdir, existing_run, tmp_path
):
    """genlab resume writes checkpoints, metrics and plots into the run: a run directory (or
    its checkpoints folder) that takes no writes is refused before the model is loaded. It
    crashed with a traceback while truncating metrics.jsonl (exit 1), or trained on and then
    failed to save its checkpoint."""
    run = tmp_path / "immutable-run"
    shutil.copytree(existing_run, run)
    with immutable(run / frozen):
        before = snapshot(run)
        done = genlab("resume", run, "train.max_steps=14", cwd=workdir)
        assert_one_line_error(done, 2, "takes no writes", "resume the copy")
        assert str(run / frozen) in done.stderr
        assert snapshot(run) == before


def test_resume_refuses_architecture_changes_by_name(workdir, existing_run):
    before = snapshot(existing_run)
    done = genlab("resume", existing_run, "model.n_embd=64", "train.max_steps=12", cwd=workdir)
    assert_one_line_error(done, 2, "model.n_embd: 32 -> 64")
    assert snapshot(existing_run) == before


@pytest.mark.parametrize(
    "args",
    [
        ["--temperature", "nan"],
        ["--temperature", "-1"],
        ["--max-new-tokens", "1000000000"],
        ["--top-p", "nan"],
        ["--top-k", "-3"],
        ["--seed", "-1"],
        ["--checkpoint", "step-99"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_generate_options(args, workdir, existing_run):
    before = snapshot(existing_run)
    assert_one_line_error(genlab("generate", existing_run, *args, cwd=workdir))
    assert snapshot(existing_run) == before


def test_a_damaged_run_config_is_refused_not_replaced_by_defaults(workdir, existing_run):
    run = workdir / "empty-config"
    shutil.copytree(existing_run, run)
    (run / "config.yaml").write_text("")
    before = snapshot(run)
    for args in (["resume", run, "train.max_steps=12"], ["eval", run], ["generate", run]):
        assert_one_line_error(genlab(*args, cwd=workdir), 2, "empty")
    assert snapshot(run) == before


def test_a_torn_log_line_is_skipped_with_a_warning(workdir, existing_run):
    run = workdir / "torn-log"
    shutil.copytree(existing_run, run)
    with (run / "metrics.jsonl").open("ab") as f:
        f.write(b'{"step": 11, "train/lo\xff')  # a crash mid-write, with a stray byte
    done = genlab("resume", run, "train.max_steps=12", cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped 1 damaged line(s)" in done.stderr
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_checkpoint_manifests_that_are_not_manifests(workdir, existing_run):
    run = workdir / "bad-manifest"
    shutil.copytree(existing_run, run)
    step10 = run / "checkpoints" / "step-10"
    for manifest in ("{}", "[]", '{"step": "abc", "files": {}}'):
        (step10 / "manifest.json").write_text(manifest)
        before = snapshot(run)
        done = genlab("eval", run, "--checkpoint", step10, "--metrics", "nll", cwd=workdir)
        assert_one_line_error(done, 2, "unusable")
        assert snapshot(run) == before


def test_a_run_whose_weights_stop_being_finite_ends_with_exit_3(workdir):
    # The guard is off, so nothing stops the divergence: genlab still refuses to sample from
    # non-finite weights and ends the run with the guard's exit code and a diagnosis.
    run = workdir / "diverged"
    done = genlab(
        "train",
        "empty.yaml",
        "data.source=corpus.txt",
        "data.dedup.near=false",
        "data.block_size=32",
        "model.n_layer=1",
        "model.n_embd=32",
        "model.n_head=2",
        "model.init_std=1.0",
        "optim.name=sgd",
        "optim.lr=10",
        "train.grad_clip=0",
        "train.max_steps=30",
        "train.eval_every=10",
        "train.progress=false",
        "guard.enabled=false",
        "--run-dir",
        run,
        cwd=workdir,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "no longer finite" in done.stderr
    assert "no longer finite" in (run / "diagnosis.txt").read_text()


def test_a_hugging_face_directory_without_family_hf_says_to_set_it(workdir, tmp_path):
    """finetune.init_from naming a Hugging Face model directory (e.g. one `genlab export
    --format hf` wrote) with model.family left at gpt: one line saying to set model.family=hf.
    The pretrained tokenizer was looked up first, and its error said the directory was
    'neither a genlab run ... nor a Hugging Face model directory'."""
    from hfkit import make_tiny_hf_model

    hf = make_tiny_hf_model(tmp_path / "tiny-hf")
    done = genlab(
        "train", "empty.yaml", f"data.source={workdir / 'corpus.txt'}",
        f"finetune.init_from={hf}", "--run-dir", tmp_path / "ft", cwd=workdir,
    )  # fmt: skip
    assert_one_line_error(done, 2, "is a Hugging Face model directory", "model.family=hf")
    assert not (tmp_path / "ft").exists()
