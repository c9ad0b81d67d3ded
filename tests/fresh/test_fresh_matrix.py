"""The fresh-process matrix: every CLI path of every family through the real `genlab` command,
each step in its own process, as a user runs them (freshkit.cli_chain). Nothing here may rely
on what the test process imported: a path that works only because pytest imported some module
earlier fails here. The rows are spread over test_fresh_*.py modules so parallel workers
share them; each new capability adds its step to the chain or a row of its own."""

from __future__ import annotations

import pytest

from freshkit import cli_chain


@pytest.mark.parametrize("family", ["char-gpt", "bpe-gpt", "gpt-lora"])
def test_every_cli_path_works_in_a_fresh_process(family, workdir, request):
    cli_chain(family, workdir, request)
