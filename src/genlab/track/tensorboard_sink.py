"""TensorBoard: event files under RUN_DIR/tb/ (`track.tensorboard: true`).

One writer, one TensorBoard run (the directory tb/): scalars under metrics.jsonl's own keys,
guard events and text samples as text, image grids as images, the resolved config as text at
the start, and at the end one HParams entry (the flattened config and the final metrics)
written into the same run: `SummaryWriter.add_hparams` would open a second run in a
subdirectory. A resumed run passes `purge_step`, so steps logged before a crash and replayed
after the resume are shown once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genlab.errors import require
from genlab.track.flat import as_text, flatten
from genlab.track.sinks import RunEnd, scalars

if TYPE_CHECKING:
    from genlab.config import ExperimentConfig
    from genlab.track.rundir import RunDir


def fenced(text: str) -> str:
    """Text shown as is by TensorBoard's markdown: every line indented four spaces."""
    return "\n".join("    " + line for line in text.splitlines()) or "    (empty)"


class TensorBoardSink:
    def __init__(self, cfg: ExperimentConfig, run: RunDir, start_step: int):
        require("tensorboard", "track")
        from torch.utils.tensorboard import SummaryWriter

        self.cfg = cfg
        # purge_step: events at or after it from an earlier (crashed) process are hidden.
        self.writer = SummaryWriter(
            str(run.tensorboard), purge_step=start_step + 1 if start_step else None
        )
        self.writer.add_text("config", fenced(cfg.to_yaml()), global_step=start_step)
        self.last: dict[str, float] = {}  # the newest value logged per key
        self.last_step = start_step

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, global_step=step)
            self.last[key] = value
        self.last_step = max(self.last_step, step)

    def write_event(self, event: Mapping[str, Any]) -> None:
        detail = json.dumps(event.get("detail", {}), default=str)
        text = f"**{event.get('kind')}** → {event.get('action')}  \n`{detail}`"
        self.writer.add_text("guard/events", text, global_step=int(event["step"]))

    def add_samples(self, step: int, files: Sequence[Path]) -> None:
        import numpy as np
        from PIL import Image

        for path in files:
            kind = path.stem.rpartition("step-")[0].rstrip("-")  # "recon" in recon-step-N.png
            tag = f"samples/{kind}" if kind else "samples"
            if path.suffix == ".txt":
                text = path.read_text(encoding="utf-8", errors="replace")
                self.writer.add_text(tag, fenced(text), global_step=step)
            elif path.suffix == ".png":
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
                self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self, end: RunEnd) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = scalars(end.final)
        for key, value in final.items():  # HParams reads its metrics from the run's scalars
            if self.last.get(key) != value:
                self.writer.add_scalar(key, value, global_step=self.last_step)
        params = {k: _hparam(v) for k, v in flatten(self.cfg.to_dict()).items()}
        writer = self.writer._get_file_writer()
        for summary in hparams(params, final):
            writer.add_summary(summary, self.last_step)
        self.writer.close()


def _hparam(value: Any) -> Any:
    """HParams take bool, int, float or str."""
    return value if isinstance(value, bool | int | float | str) else as_text(value)
