"""Checkpoints written in the background, and a full disk as a clear error.

A save has two halves. *Staging* runs on the training thread: every tensor the checkpoint will
hold is copied to host memory (from a GPU, the device-to-host copy; on a CPU, a copy), so the
next step may change the live weights and optimizer state at once. *Writing* runs on one
background thread per process (a `BackgroundQueue`): serialize, write each file, fsync, hash,
manifest last, rename into place (checkpoint.py's atomic recipe), then prune. Jobs run in
submission order, so marking a checkpoint healthy or pruning never overtakes the save it
refers to. The loop waits for pending jobs before anything reads a checkpoint back (a rollback
from disk, early stopping's best weights) and before a run ends: a run never finishes before
its last save is complete. `train.async_checkpoint=false` runs every job at once instead.

A write that fails for lack of space (ENOSPC, EDQUOT, or EFBIG from a file-size limit) removes
its temporary directory and becomes a `DiskFullError` (exit 2) naming the place, the size and
the newest complete checkpoint, which stays as it was.
"""

from __future__ import annotations

import copy
import errno
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.errors import DiskFullError

SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

# A module's weights staged for `<key>.safetensors`: host tensors and safetensors metadata.
Staged = tuple[dict[str, torch.Tensor], dict[str, str] | None]


class BackgroundQueue:
    """One background thread that runs jobs in submission order (or, not `background`, runs
    each job when it is submitted): the checkpoint writer, and the loop's plotter."""

    def __init__(self, background: bool):
        self.background = background
        self._pool = ThreadPoolExecutor(1, "genlab-background") if background else None
        self._pending: list[Future] = []

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        """Queue `job(*args)`; its error is raised by `wait`, also when it ran at once (so
        every rank learns of a failed save at the same point, through checkpoint_io.wait)."""
        if self._pool is not None:
            self._pending.append(self._pool.submit(job, *args))
            return
        done: Future = Future()
        try:
            done.set_result(job(*args))
        except BaseException as exc:
            done.set_exception(exc)
        self._pending.append(done)

    def busy(self) -> bool:
        """Whether a submitted job is still queued or running."""
        return any(not f.done() for f in self._pending)

    def wait(self) -> None:
        """Block until every submitted job is done; raise the first one's error."""
        pending, self._pending = self._pending, []
        error: BaseException | None = None
        for future in pending:
            try:
                future.result()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

    def close(self) -> None:
        """Finish what was submitted (errors dropped: the caller is already failing), stop."""
        try:
            self.wait()
        except BaseException:
            pass
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def to_host(obj: Any) -> Any:
    """A copy of `obj` (dicts, lists, tuples of tensors and plain values) whose tensors live in
    host memory and share nothing with the live ones."""
    return _copy_tree(obj, lambda t: t.detach().to("cpu", copy=True))


def clone_state(obj: Any) -> Any:
    """A copy of `obj` (an optimizer's or a family's state dict) whose tensors are clones on
    their own devices: what `copy.deepcopy` gives, at ~1/6 of its Python work (deepcopy asks
    every tensor and int for its copy protocol and keeps a memo)."""
    return _copy_tree(obj, lambda t: t.detach().clone())


def _copy_tree(obj: Any, copy_tensor: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return copy_tensor(obj)
    if isinstance(obj, dict):
        return {k: _copy_tree(v, copy_tensor) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy_tree(v, copy_tensor) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_copy_tree(v, copy_tensor) for v in obj)
    return copy.deepcopy(obj)


def stage_weights(modules: dict[str, nn.Module] | dict[str, dict[str, torch.Tensor]]) -> dict:
    """Host copies of each module's weights in the layout `safetensors.torch.save_model`
    writes: a tied tensor under one name, the dropped names in the metadata (so a module saved
    in the background gives the same file as one saved directly)."""
    from safetensors.torch import _remove_duplicate_names  # what save_model itself uses

    staged: dict[str, Staged] = {}
    for key, module in modules.items():
        if not isinstance(module, nn.Module):  # already a full state dict (gathered)
            staged[key] = ({k: to_host(v) for k, v in module.items()}, None)
            continue
        state = module.state_dict()
        metadata: dict[str, str] | None = None
        for kept, dropped in _remove_duplicate_names(state).items():
            for name in dropped:
                metadata = metadata or {}
                metadata.setdefault(name, kept)
                del state[name]
        staged[key] = ({k: to_host(v).contiguous() for k, v in state.items()}, metadata)
    return staged


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in `obj` (what a checkpoint of it needs on disk, roughly)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def space_error(exc: BaseException) -> OSError | None:
    """The out-of-space OSError behind `exc` (its causes, or a DCP CheckpointException's
    per-rank failures), if that is what it is."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if isinstance(e, tuple):  # DCP's (exception, traceback) pairs
            todo.extend(x for x in e if isinstance(x, BaseException))
            continue
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in SPACE_ERRNOS:
            return e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        todo.extend(getattr(e, "failures", {}).values())
    return None


def guard_space(
    job: Callable[..., Path], root: Path, name: str, needed: int
) -> Callable[..., Path]:
    """`job` with an out-of-space failure turned into a DiskFullError about checkpoint
    `name` under `root` that needed about `needed` bytes."""

    def run(*args: Any) -> Path:
        try:
            return job(*args)
        except BaseException as exc:
            full = space_error(exc)
            if full is None:
                raise
            raise disk_full(root, name, needed, full) from None

    return run


def disk_full(root: Path, name: str, needed: int, exc: OSError) -> DiskFullError:
    from genlab.training.checkpoint import list_checkpoints

    kept = list_checkpoints(root)
    last = f"the last good checkpoint {kept[-1].path.name} is kept" if kept else "no earlier one"
    why = exc.strerror or type(exc).__name__
    where = str(root) if len(str(root)) <= 80 else "..." + str(root)[-77:]
    return DiskFullError(
        f"disk full at {where!r} ({why}): checkpoint {name} needs about "
        f"{needed / 2**20:.1f} MB and was not written; {last}; free space, then "
        "`genlab resume` the run directory"
    )
