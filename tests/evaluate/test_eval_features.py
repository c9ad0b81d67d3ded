"""The feature classifier genlab trains on real images: accuracy, caching, and features that
separate real digits from noise."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import CheckpointError, ConfigError, DataError
from genlab.evaluation import digits_dataset, fid, load_or_train_feature_classifier


@pytest.fixture(scope="module")
def digits():
    return digits_dataset(test_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("feature-cache")
    rng_before = torch.get_rng_state()
    clf = load_or_train_feature_classifier(*digits, cache_dir=cache, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched
    return clf, cache


def test_digits_dataset_shapes(digits):
    x_tr, y_tr, x_te, y_te = digits
    assert x_tr.shape[1:] == (1, 8, 8) and x_tr.shape[0] + x_te.shape[0] == 1797
    assert float(x_tr.min()) >= 0.0 and float(x_tr.max()) <= 1.0
    assert set(y_tr.tolist()) == set(y_te.tolist()) == set(range(10))  # stratified split


def test_classifier_accuracy_and_identity(trained, digits):
    clf, _ = trained
    assert not clf.from_cache
    assert clf.test_accuracy >= 0.9
    preds = clf.probs(digits[2]).argmax(dim=1)  # recomputed here, not trusted from the object
    assert float((preds == digits[3]).double().mean()) == pytest.approx(clf.test_accuracy)
    assert len(clf.content_hash) == 64 and clf.name.startswith("genlab-small-cnn")
    assert clf.path.suffix == ".safetensors"
    feats = clf.features(digits[2])
    assert feats.shape == (digits[2].shape[0], 64) and torch.isfinite(feats).all()
    assert torch.allclose(clf.probs(digits[2]).sum(dim=1), torch.ones(digits[2].shape[0]))


def test_second_call_loads_from_cache(trained, digits):
    clf, cache = trained
    mtime = clf.path.stat().st_mtime_ns
    again = load_or_train_feature_classifier(*digits, cache_dir=cache, seed=0)
    assert again.from_cache and again.path == clf.path
    assert clf.path.stat().st_mtime_ns == mtime  # not rewritten
    assert again.content_hash == clf.content_hash
    assert again.test_accuracy == clf.test_accuracy
    x = digits[2][:16]
    assert torch.equal(again.features(x), clf.features(x))
    assert len(list(cache.iterdir())) == 1  # no temp files left behind


def test_features_tell_real_digits_from_noise(trained, digits):
    clf, _ = trained
    real_a = clf.features(digits[0][:300])
    real_b = clf.features(digits[2][:300])
    noise = clf.features(torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert fid(real_a, noise) > 5 * fid(real_a, real_b)


def test_corrupt_cache_and_bad_inputs(trained, digits, tmp_path):
    clf, _ = trained
    bad = tmp_path / clf.path.name
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="delete the file") as exc:
        load_or_train_feature_classifier(*digits, cache_dir=tmp_path, seed=0)
    assert "\n" not in str(exc.value)
    x_tr, y_tr, x_te, y_te = digits
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_or_train_feature_classifier(x_tr * 16, y_tr, x_te, y_te, cache_dir=tmp_path)
    with pytest.raises(DataError, match="one per image"):
        load_or_train_feature_classifier(x_tr, y_tr[:-1], x_te, y_te, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="epochs"):
        load_or_train_feature_classifier(*digits, cache_dir=tmp_path, epochs=0)
    with pytest.raises(DataError, match=r"\(N, 1, H, W\)"):
        clf.features(torch.rand(4, 3, 8, 8))
