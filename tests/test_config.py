import pytest
import yaml

from genlab import config
from genlab.errors import ConfigError


def test_defaults_and_yaml_overrides():
    cfg = config.load(None, ["optim.lr=3e-4", "guard.inject=[{step: 30, kind: nan_loss}]"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert isinstance(cfg.optim.lr, float)
    assert cfg.guard.inject[0].step == 30 and cfg.guard.inject[0].kind == "nan_loss"


def test_file_values_then_overrides(write_config):
    path = write_config("model:\n  n_layer: 2\ntrain:\n  max_steps: 5\n", name="mine.yaml")
    cfg = config.load(path, ["train.max_steps=7"])
    assert cfg.model.n_layer == 2
    assert cfg.train.max_steps == 7
    assert cfg.name == "mine"  # defaults to the file's stem


def test_resolved_config_round_trips_with_every_default():
    cfg = config.load(None, ["seed=3"])
    dumped = yaml.safe_load(cfg.to_yaml())
    assert dumped["schedule"]["decay"] == "cosine"
    assert dumped["train"]["precision"] == "auto"  # a run's config.yaml names its choice
    assert config.from_dict(dumped) == cfg


def test_all_errors_reported_together():
    with pytest.raises(ConfigError) as info:
        config.load(None, ["optim.lr=-1", "trian.max_steps=3", "train.precision=fp8"])
    msg = str(info.value)
    assert "3 problems" in msg
    assert "optim.lr" in msg and "-1" in msg
    assert "did you mean 'train'" in msg
    assert "'fp32', 'bf16' or 'fp16'" in msg


def test_unknown_nested_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"did you mean 'optim.lr'\?"):
        config.load(None, ["optim.lrr=0.1"])


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match=r"n_embd=130, n_head=4; pick e.g. n_embd=128"):
        config.load(None, ["model.n_embd=130"])


def test_configs_never_execute_code(write_config):
    path = write_config("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path)


def test_a_parsed_yaml_text_is_kept_and_each_caller_gets_its_own_copy():
    """safe_yaml keeps recent parses (a run's config.yaml is read ~6 times a command): the
    same text gives an equal value that the caller may change without touching the next."""
    from genlab import safe_yaml

    text = "train:\n  max_steps: 7\nshared: &s [1, 2]\nagain: *s\n"
    first = safe_yaml.load(text, "test")
    first["train"]["max_steps"] = 99
    first["shared"].append(3)
    second = safe_yaml.load(text, "test")
    assert second == {"train": {"max_steps": 7}, "shared": [1, 2], "again": [1, 2]}
    assert second["shared"] is second["again"]  # an alias stays one value, as parsed
    assert safe_yaml.load(text.replace("7", "8"), "test")["train"]["max_steps"] == 8
    for i in range(safe_yaml.PARSED_KEPT * 2):
        safe_yaml.load(f"k: {i}\n", "test")
    assert len(safe_yaml._parsed) == safe_yaml.PARSED_KEPT
