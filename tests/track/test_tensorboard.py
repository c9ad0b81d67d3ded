"""TensorBoard's own reader (EventAccumulator) reads back what a run logged: every scalar of
metrics.jsonl at its step, the config and the samples as text, the guard's events, and one
HParams entry in the same run (no stray run directory)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from genlab.track.flat import flatten
from genlab.track.logs import read_jsonl


def load(tb_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def text(acc: EventAccumulator, tag: str) -> dict[int, str]:
    """add_text's summaries, stored under `<tag>/text_summary`."""
    found = acc.Tensors(f"{tag}/text_summary")
    return {e.step: e.tensor_proto.string_val[0].decode() for e in found}


def same(logged: float, expected: float) -> bool:
    """TensorBoard keeps scalars as float32; NaN stays NaN."""
    if math.isnan(expected):
        return math.isnan(logged)
    return logged == np.float32(expected)


def test_every_logged_number_reads_back_at_its_step(tracked_run: Path):
    records = read_jsonl(tracked_run / "metrics.jsonl")
    acc = load(tracked_run / "tb")
    expected: dict[str, dict[int, float]] = {}
    for r in records:
        for key, value in r.items():
            if key != "step" and isinstance(value, int | float):
                expected.setdefault(key, {})[r["step"]] = float(value)
    assert "train/loss" in expected and "val/loss" in expected and "memory/peak_mb" in expected
    assert set(acc.Tags()["scalars"]) == set(expected)  # the same keys, nothing else
    for key, by_step in expected.items():
        logged = {e.step: e.value for e in acc.Scalars(key)}
        assert logged.keys() == by_step.keys(), key
        bad = [s for s, v in by_step.items() if not same(logged[s], v)]
        assert not bad, (key, bad[:3])
    assert math.isnan(expected["train/loss"][7])  # the injected NaN is there, not hidden


def test_config_samples_and_guard_events_are_text(tracked_run: Path):
    acc = load(tracked_run / "tb")
    config_text = text(acc, "config")[0]
    config_yaml = "\n".join(line[4:] for line in config_text.splitlines())
    assert yaml.safe_load(config_yaml) == yaml.safe_load((tracked_run / "config.yaml").read_text())
    samples = text(acc, "samples")
    assert sorted(samples) == [10, 20]
    written = (tracked_run / "samples" / "step-20.txt").read_text()
    assert "\n".join(line[4:] for line in samples[20].splitlines()) == written.rstrip("\n")
    events = text(acc, "guard/events")
    assert list(events) == [7] and "nonfinite_loss" in events[7] and "skip" in events[7]


def test_one_hparams_entry_in_the_same_run(tracked_run: Path):
    tb = tracked_run / "tb"
    assert [p for p in tb.iterdir() if p.is_dir()] == []  # add_hparams would add a subdirectory
    content = load(tb).PluginTagToContent("hparams")
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    experiments = [d.experiment for d in data.values() if d.HasField("experiment")]
    starts = [d.session_start_info for d in data.values() if d.HasField("session_start_info")]
    assert len(experiments) == 1 and len(starts) == 1
    final = yaml.safe_load((tracked_run / "metrics.json").read_text())
    metric_tags = {m.name.tag for m in experiments[0].metric_infos}
    assert metric_tags == {
        k for k, v in final.items() if k != "step" and isinstance(v, float | int)
    }
    hparams = starts[0].hparams
    flat = flatten(yaml.safe_load((tracked_run / "config.yaml").read_text()))
    assert hparams["optim.lr"].number_value == flat["optim.lr"]
    assert hparams["model.family"].string_value == "gpt"
    assert hparams["train.progress"].bool_value is False
    assert set(hparams) == set(flat)


def test_image_grids_become_images(tmp_path: Path):
    """A VAE's sample and reconstruction grids: TensorBoard images with the PNGs' pixels, and
    inline images on the report."""
    import io

    from PIL import Image

    import genlab

    run = tmp_path / "vae"
    images = [
        "model.family=vae",
        "data.source=digits",
        "model.vae.arch=mlp",
        "model.vae.hidden=32",
        "model.vae.latent_dim=4",
        "train.batch_size=32",
        "train.eval_batches=2",
        "train.max_steps=5",
        "train.eval_every=5",
        "train.sample_every=5",
        "train.checkpoint_every=5",
        "train.progress=false",
        "track.tensorboard=true",
    ]
    genlab.train(None, run, images)
    acc = load(run / "tb")
    for tag, name in (("samples", "step-5.png"), ("samples/recon", "recon-step-5.png")):
        (event,) = acc.Images(tag)
        assert event.step == 5
        logged = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        written = np.asarray(Image.open(run / "samples" / name).convert("RGB"))
        assert np.array_equal(logged, written), tag
    page = (run / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') >= 2
    assert 'alt="recon at step 5"' in page and 'alt="samples at step 5"' in page
