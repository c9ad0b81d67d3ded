"""`genlab generate` on a language-model run: without a prompt the model starts a document
(what follows the separator every training document follows) and that document alone comes
back; options of other families and bad thread counts are one-line errors."""

from __future__ import annotations

import pytest

from genlab import api
from genlab.data.prepare import DOC_SEPARATOR
from genlab.errors import ConfigError
from genlab.training.loop import train
from testkit import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "run"
    train(tiny_config("train.max_steps=10"), root)
    return root


def test_no_prompt_starts_a_new_document_and_returns_it_alone(run):
    default = api.generate(run, max_new_tokens=30, seed=1)
    explicit = api.generate(run, prompt=DOC_SEPARATOR, max_new_tokens=30, seed=1)
    assert explicit.startswith(DOC_SEPARATOR)
    assert default == explicit[len(DOC_SEPARATOR) :]  # same draw, without the separator
    assert len(default) == 30  # character tokenizer: one character per new token


def test_options_of_other_families_and_bad_threads_are_refused(run):
    with pytest.raises(ConfigError, match="--num-samples does not apply to a gpt run"):
        api.generate(run, num_samples=4)
    with pytest.raises(ConfigError, match="--threads must be in"):
        api.generate(run, threads=0)
