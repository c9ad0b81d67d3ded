"""Perturbations: identity at strength 0, monotone in strength, seeded; table and plot."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import ConfigError, DataError
from genlab.evaluation import (
    IMAGE_PERTURBATIONS,
    TEXT_PERTURBATIONS,
    blur,
    char_noise,
    plot_robustness,
    robustness_table,
    sentence_chrf,
    shift,
    word_drop,
)

TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! "
    "How vexingly quick daft zebras jump; sphinx of black quartz, judge my vow."
)


def _images():
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _char_diff(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


@pytest.mark.parametrize("name", sorted(TEXT_PERTURBATIONS))
def test_text_perturbations(name):
    perturb = TEXT_PERTURBATIONS[name]
    assert perturb(TEXT, 0.0, seed=3) == TEXT
    assert perturb(TEXT, 0.5, seed=3) == perturb(TEXT, 0.5, seed=3)  # seeded
    assert perturb(TEXT, 0.5, seed=3) != perturb(TEXT, 0.5, seed=4)
    diffs = [_char_diff(TEXT, perturb(TEXT, s, seed=3)) for s in (0.0, 0.1, 0.4, 1.0)]
    assert diffs[0] == 0 < diffs[1] < diffs[2] <= diffs[3]
    batch = perturb([TEXT, TEXT], 0.3, seed=1)
    assert isinstance(batch, list) and len(batch) == 2 and batch[0] != TEXT


def test_text_perturbation_semantics():
    noisy = char_noise("a b c", 1.0, seed=0)
    assert noisy[1] == " " and noisy[3] == " "  # spaces kept
    assert word_drop("one two three", 1.0, seed=0) == ""
    assert TEXT_PERTURBATIONS["case_change"]("abc", 1.0) == "ABC"
    typo = TEXT_PERTURBATIONS["typos"]("ab", 1.0)
    assert typo == "ba" and sorted(TEXT_PERTURBATIONS["typos"](TEXT, 1.0)) == sorted(TEXT)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        char_noise(TEXT, 1.5)
    with pytest.raises(DataError):
        char_noise([1, 2], 0.1)  # type: ignore[list-item]


@pytest.mark.parametrize("name", sorted(IMAGE_PERTURBATIONS))
def test_image_perturbations(name):
    perturb, x = IMAGE_PERTURBATIONS[name], _images()
    assert torch.equal(perturb(x, 0.0, seed=1), x)
    out = perturb(x, 0.5, seed=1)
    assert out.shape == x.shape and torch.equal(out, perturb(x, 0.5, seed=1))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    changes = [float((perturb(x, s, seed=1) - x).abs().mean()) for s in (0.0, 0.25, 0.5, 1.0)]
    assert changes[0] == 0 < changes[1] < changes[2] < changes[3]
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        perturb(x[0], 0.5)


def test_image_perturbation_semantics():
    flat = torch.full((1, 1, 8, 8), 0.7)
    assert torch.allclose(blur(flat, 1.0), flat)  # reflect borders keep a flat image flat
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 3] = 1.0
    moved = shift(x, 1.0, seed=0)  # round(1.0 * 8 / 4) = 2 pixels in each axis
    (row, col) = (moved[0, 0] == 1.0).nonzero()[0].tolist()
    assert abs(row - 3) == 2 and abs(col - 3) == 2 and float(moved.sum()) == 1.0


def test_robustness_table_and_plot(tmp_path):
    refs = [TEXT]

    def metric(hyps):
        return sentence_chrf(hyps[0], refs[0])

    strengths = [0.0, 0.2, 0.6]
    table = robustness_table(metric, [TEXT], TEXT_PERTURBATIONS, strengths, seed=0)
    assert len(table) == len(TEXT_PERTURBATIONS) * len(strengths)
    for name in TEXT_PERTURBATIONS:
        rows = [r for r in table if r["perturbation"] == name]
        assert rows[0]["delta"] == 0.0 and rows[0]["metric"] == pytest.approx(100.0)
        assert rows[2]["delta"] < rows[1]["delta"] < 0  # chrF drops as noise grows
    assert table == robustness_table(metric, [TEXT], TEXT_PERTURBATIONS, strengths, seed=0)
    path = plot_robustness(table, tmp_path / "plots" / "robustness.png", metric_name="chrF")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    with pytest.raises(ConfigError):
        robustness_table(metric, [TEXT], TEXT_PERTURBATIONS, [0.0, 2.0])
    with pytest.raises(ConfigError):
        robustness_table(metric, [TEXT], {}, strengths)
