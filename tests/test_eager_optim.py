"""eager_optim: the `genlab` command's optimizer calls skip torch._dynamo's import and update
the weights exactly as `optimizer.step()` does.

Both checks run in fresh processes: in the test process torch._dynamo is usually loaded by
then (and eager_optim then takes torch's own path, which would make a comparison vacuous).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Trains the same model twice for 5 steps per optimizer: first through eager_optim (asserting
# it took its own path and left torch._dynamo unimported), then through torch's
# `optimizer.step()` (which imports torch._dynamo). The weights and the optimizer state must
# be bitwise equal.
SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from genlab.config import OptimConfig
    from genlab.training import eager_optim
    from genlab.training.optim import build_optimizer

    eager_optim.skip_dynamo_import()

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)
        )

    def train(opt_name, through_genlab):
        m = model()
        cfg = OptimConfig(name=opt_name, lr=0.05, weight_decay=0.1, momentum=0.9)
        opt = build_optimizer(m, cfg)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            opt.zero_grad(set_to_none=True)
            m(torch.randn(32, 8, generator=g)).pow(2).mean().backward()
            if through_genlab:
                assert eager_optim._plain_step(opt) is not None, "took torch's path"
                eager_optim.step(opt)
            else:
                opt.step()
        opt.load_state_dict(opt.state_dict())  # the wrapped state calls work too
        return m, opt

    names = ("adamw", "adam", "sgd")
    mine = {n: train(n, True) for n in names}
    assert "torch._dynamo" not in sys.modules, "eager_optim imported torch._dynamo"

    # A registered step hook must be honoured: eager_optim defers to torch then.
    m, opt = mine["adamw"]
    handle = opt.register_step_post_hook(lambda *a: None)
    assert eager_optim._plain_step(opt) is None
    handle.remove()

    for n in names:
        ref_m, ref_opt = train(n, False)
        assert "torch._dynamo" in sys.modules  # torch's own step imported it: a real reference
        m, opt = mine[n]
        for a, b in zip(m.parameters(), ref_m.parameters()):
            assert torch.equal(a, b), n
        for a, b in zip(opt.state.values(), ref_opt.state.values()):
            for k in a:
                assert torch.equal(a[k], b[k]), (n, k)
    print("ok")
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def test_steps_through_genlab_equal_torchs_step_bitwise_without_importing_dynamo():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_a_genlab_train_process_imports_neither_dynamo_nor_dtensor(tmp_path):
    """A plain (unsharded, uncompiled) `genlab train` imports neither torch._dynamo (2.8 s
    here) nor torch.distributed.tensor (0.8 s): PYTHONPROFILEIMPORTTIME lists every import."""
    genlab = str(Path(sys.executable).with_name("genlab"))
    cmd = [genlab, "train", str(ROOT / "examples" / "lm.yaml"), "train.max_steps=2"]
    cmd += ["train.eval_batches=1", "train.progress=false", "--run-dir", str(tmp_path / "r")]
    env = {**_env(), "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "torch" in imported  # the listing is real
    assert "torch._dynamo" not in imported
    assert "torch.distributed.tensor" not in imported
    assert (tmp_path / "r" / "metrics.json").is_file()
