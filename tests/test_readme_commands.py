"""The README's commands run as printed. Every command of its shell blocks is taken in
order and run in a shell, after the README's own `source .venv/bin/activate` line, in a fresh
directory holding the repository's Makefile and examples: through the real `make`, `genlab`
and `torchrun`. Cheap overrides are appended so the whole walk takes seconds of compute
(a command's own settings come first, later `key=value`s win); the few commands too long for
a test are listed in SKIPPED with the reason and where they are tested instead, and a README
command this file does not know fails the test, so a new one cannot go untested unnoticed.
`make run` runs its real target too (the venv set up already: its stamp is taken as current),
and a second `make run` must keep the first run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # the environment these tests run in: what `make run` set up

TINY_LM = [
    "data.block_size=32", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
    "train.batch_size=8", "train.eval_batches=2", "train.eval_every=10",
    "train.checkpoint_every=10", "train.sample_every=10", "train.sample_tokens=16",
    "schedule.warmup_steps=2", "guard.healthy_after=3",
]  # fmt: skip
TINY_IMAGES = [
    "model.vae.hidden=32", "model.vae.latent_dim=4", "model.gan.hidden=32", "model.gan.z_dim=8",
    "train.batch_size=32", "train.eval_batches=2", "train.eval_every=5",
    "train.checkpoint_every=5", "train.sample_every=10", "schedule.warmup_steps=2",
]  # fmt: skip
TINY_TUNE = [
    *TINY_LM, "tune.n_trials=2", "tune.seeds=1", "tune.final.top_k=1", "tune.final.seeds=1",
    "train.max_steps=10", "train.eval_every=5",
]  # fmt: skip

TINY_CLASSIFY = [  # on the walk's 1-block quickstart backbone
    "data.block_size=32", "finetune.freeze_blocks=1", "train.batch_size=16",
    "train.max_steps=6", "train.eval_every=3", "train.checkpoint_every=6",
    "train.sample_every=6", "schedule.warmup_steps=2",
]  # fmt: skip
TINY_COMPRESS = ["compress.eval_windows=8", "compress.measure_speed=false"]

# Commands not run here (a long run, several processes, a server): why, and where they are
# tested instead. Keyed by a part of the command.
SKIPPED = {
    "make test": "the test suite itself",
    "--nproc-per-node": "several processes: tests/test_sharded_strategies.py (multiproc)",
    "torchrun": "several processes: tests/test_sharded_strategies.py (multiproc)",
    "USER:PASS@db-host": "a placeholder server: tests/tune/test_postgres.py runs several "
    "`genlab tune` processes on one real PostgreSQL database",
    "tune-classify.yaml": "a 6-point grid x 3 folds: tests/classify/test_classify_runs.py::"
    "test_grid_search_over_lr_and_freeze_depth_with_stratified_folds",
    "--format onnx": "tests/export/test_export_onnx.py (parity in ONNX Runtime); the walk "
    "exports runs/lm once, as hf",
    "--format gguf": "tests/export/test_export_gguf.py (read back by gguf and transformers)",
}
SHELL_OPERATORS = {">", ">>", "|", "&&", ";"}


def shell_line(words: list[str]) -> str:
    """The words as one shell line: each quoted, except redirections and operators."""
    return " ".join(w if w in SHELL_OPERATORS else shlex.quote(w) for w in words)


def readme_commands(text: str) -> list[str]:
    """The commands of the shell blocks (```bash, ```sh), in order: continuation lines joined,
    comments and blank lines dropped."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shell_line(words))
    return commands


def cheap_version(command: str) -> list[str] | None:
    """The command as printed plus what makes it quick, or None when it is SKIPPED."""
    words = shlex.split(command)
    if any(marker in command for marker in SKIPPED):
        return None
    if words[:2] == ["make", "run"]:  # the venv exists; tiny overrides through ARGS
        tiny = " ".join([*TINY_LM, "train.max_steps=20"])
        return [*words, "-o", f"{VENV}/.genlab-installed", f"VENV={VENV}", f"ARGS={tiny}"]
    if words[:2] == ["source", ".venv/bin/activate"] or words[0] == "printf":
        return words
    if words[0] != "genlab":
        raise AssertionError(f"README command {command!r}: add how to run it to this test")
    verb = words[1]
    if verb == "train" and "digits-" in words[2]:
        return [*words, *TINY_IMAGES, "train.max_steps=10"]
    if verb == "train" and "classify-" in words[2]:
        return [*words, *TINY_CLASSIFY]
    if verb == "train":
        injected = [int(n) for n in re.findall(r"step: (\d+)", command)]
        return [*words, *TINY_LM, f"train.max_steps={max([20, *injected]) + 10}"]
    if verb == "tune":
        return [*words, *TINY_TUNE]
    if verb == "generate" and "--prompt" in words:
        return [*words, "--max-new-tokens", "20"]
    if verb == "compress":  # quality on a few windows, no speed columns, short recovery
        recover = ["compress.recover_steps=2"] if "--sweep" in words or "recover" in command else []
        return [*words, *TINY_COMPRESS, *recover]
    if verb in ("generate", "eval", "predict", "export", "runs", "compare", "--version"):
        return words
    raise AssertionError(f"README command {command!r}: add how to run it to this test")


def _shell(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """argv in bash, after the README's activation line, as a user's shell runs it."""
    script = f"source .venv/bin/activate && {shell_line(argv)}"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # no venv on PATH until activated
    env.update(OMP_NUM_THREADS="1", GENLAB_CACHE_DIR=str(cwd / "cache"))
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _make_checkout(root: Path) -> Path:
    """What a user has after `git clone` and `make run`'s setup: the Makefile, the examples,
    and .venv (here: the environment running these tests)."""
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    shutil.copytree(ROOT / "examples", root / "examples")
    (root / ".venv").symlink_to(VENV)
    return root


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return _make_checkout(tmp_path)


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One checkout the README's commands run in, one after the other (later ones use what
    earlier ones wrote: runs/quickstart, studies/tune-lm/best.yaml)."""
    return _make_checkout(tmp_path_factory.mktemp("readme"))


COMMANDS = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_lists_its_commands_and_says_how_genlab_gets_on_path():
    assert COMMANDS[:3] == ["make run", "make test", "source .venv/bin/activate"]
    assert any(c.startswith("genlab generate runs/quickstart") for c in COMMANDS)
    # Every command is run below or skipped with a reason (an unknown one fails right here).
    assert sum(cheap_version(c) is not None for c in COMMANDS) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c[:60] for c in COMMANDS])
def test_every_readme_command_runs_as_printed(command: str, walk: Path):
    argv = cheap_version(command)
    if argv is None:  # not run here, but what it calls must be found as printed
        program = shlex.split(command)[0]
        found = _shell(["command", "-v", program], walk)
        assert found.returncode == 0, f"{program!r} of {command!r} is not on PATH"
        return
    done = _shell(argv, walk)
    assert done.returncode == 0, f"README command failed: {command}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    if argv[:2] == ["make", "run"]:
        assert (walk / "runs" / "quickstart" / "checkpoints").is_dir()
        assert (walk / "runs" / "quickstart" / "report.html").is_file()  # the whole run, a page
    assert "not written" not in done.stderr, done.stderr[-2000:]  # e.g. a report that failed
    if argv[:2] == ["genlab", "tune"]:  # off a terminal: a line per finished trial
        assert "tune: 1/2 trials finished" in done.stderr, done.stderr[-2000:]
    if argv[:2] in (["genlab", "train"], ["genlab", "tune"]):  # where it wrote, with its report
        text = f"{done.stdout}\n{done.stderr}"
        where = re.search(r"(?:^genlab training .* → |^study dir: )(\S+)$", text, re.M)
        assert where and (walk / where[1] / "report.html").is_file(), done.stdout[-2000:]


def test_a_second_make_run_keeps_the_first_run(checkout: Path):
    run = checkout / "runs" / "quickstart"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"eval/val/perplexity": 4.19}\n')
    argv = ["make", "run", "-o", f"{VENV}/.genlab-installed", f"VENV={VENV}"]
    again = _shell(argv, checkout)
    assert again.returncode == 2
    assert "runs/quickstart already holds a run; it is kept" in again.stderr
    assert "make run OVERWRITE=1" in again.stderr
    assert "genlab resume runs/quickstart" in again.stderr
    assert (run / "metrics.json").read_text() == '{"eval/val/perplexity": 4.19}\n'
    assert [p.name for p in run.iterdir()] == ["metrics.json"]
