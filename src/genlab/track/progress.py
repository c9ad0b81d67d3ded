"""Rich progress bars: over training steps (loss, lr, throughput), and over the phases of other
long work (`WorkProgress`: evaluation). On a terminal they redraw in place; elsewhere (CI, log
files) they stay silent and the printed lines tell the story."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from genlab.track.console import rate_text

T = TypeVar("T")


class TrainProgress:
    def __init__(self, total: int, start: int, console: Console, enabled: bool = True):
        self._progress = Progress(
            TextColumn("[bold blue]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, stats="")

    def __enter__(self) -> TrainProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def phase(self, step: int, what: str) -> None:
        """Say what the step is doing after its update (evaluating, writing samples, saving a
        checkpoint): the final evaluation and checkpoint can take longer than many steps."""
        self._progress.update(self._task, completed=step - 1, stats=f"step {step}: {what}")

    def update(self, step: int, record: dict[str, Any]) -> None:
        parts = [
            f"{k[6:]} {v:.4f}"
            for k, v in record.items()
            if k.startswith("train/") and k.endswith("loss")
        ]
        parts += [
            f"{k[6:]} {v:.1e}"
            for k, v in record.items()
            if k.startswith("train/") and k.endswith("lr")
        ][:1]
        parts += [rate_text(k, v) for k, v in record.items() if k.startswith("throughput/")]
        stats = " ".join(parts)
        self._progress.update(self._task, completed=step, stats=stats)


class WorkProgress:
    """Bars for the phases of a long command that is not training (`genlab eval`: the
    likelihood batches, the continuation batches), one bar a phase. Silent, like the
    training bar, where the console is not a terminal (or there is no console)."""

    def __init__(self, console: Console | None, title: str):
        self._progress = Progress(
            TextColumn(f"[bold blue]{title}"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=console is None or not console.is_terminal,
            transient=False,
        )

    def __enter__(self) -> WorkProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def track(self, items: Iterable[T], total: int, what: str) -> Iterator[T]:
        """`items`, advancing a bar named `what` of `total` units as each is taken."""
        step = self.counter(total, what)
        for item in items:
            yield item
            step()

    def counter(self, total: int, what: str) -> Callable[[], None]:
        """A new bar named `what` of `total` units, and the function that advances it."""
        task = self._progress.add_task(what, total=total)
        return lambda: self._progress.advance(task)
