"""Output written to logs and pipes: whole metric names and units (no 80-column wrapping or
ellipses), the progress bar's phase, and write failures that never raise."""

from __future__ import annotations

import io
import os

from genlab.evaluation.report import print_table
from genlab.evaluation.result import MetricResult
from genlab.track.console import _SafeStream, make_console, rate_text
from genlab.track.progress import TrainProgress
from genlab.training.summary import print_eval

LONG = [f"robustness/classifier_accuracy/gaussian_noise@{s}" for s in (0.25, 0.5, 1)]


def test_a_console_that_is_not_a_terminal_writes_whole_names_on_one_line():
    out = io.StringIO()
    console = make_console(file=out)
    results = {name: MetricResult(name, -0.01, 180, "val", {}) for name in LONG}
    print_table(results, console)
    record = {"step": 300, "train/loss": 1.4, "throughput/tokens_per_s": 1424.2}
    val = {f"val/{k}": 1.0 for k in ("loss", "perplexity", "bits_per_byte", "tokens", "bytes")}
    print_eval(console, record, val, "throughput/tokens_per_s")
    text = out.getvalue()
    for name in LONG:  # three rows that differ only at their ends stay distinguishable
        assert f"val/{name}" in text
    eval_line = [line for line in text.splitlines() if line.startswith("step")]
    assert len(eval_line) == 1 and eval_line[0].endswith("| 1,424 tokens/s")


def test_rates_carry_their_unit():
    assert rate_text("throughput/tokens_per_s", 1424.2) == "1,424 tokens/s"
    assert rate_text("throughput/samples_per_s", 26672) == "26,672 samples/s"
    # MFU is a fraction of the matmul peak, not a rate: shown as a percentage.
    assert rate_text("throughput/mfu", 0.0312) == "MFU 3.1%"


def test_the_progress_bar_names_the_phase_of_a_long_step():
    progress = TrainProgress(300, 0, make_console(file=io.StringIO()), enabled=False)
    progress.phase(300, "saving a checkpoint")
    task = progress._progress.tasks[0]
    assert task.completed == 299 and task.fields["stats"] == "step 300: saving a checkpoint"


def test_a_write_to_a_closed_pipe_is_swallowed_and_later_writes_go_nowhere():
    read_end, write_end = os.pipe()
    stream = _SafeStream(os.fdopen(write_end, "w", buffering=1))
    os.close(read_end)  # the reader went away (`| head -3` after its lines)
    assert stream.write("step 10 | loss 1.0\n") == len("step 10 | loss 1.0\n")
    stream.flush()
    assert stream.closed_by_reader
    stream.write("more\n")  # /dev/null now: no error, ever again
    stream.flush()
