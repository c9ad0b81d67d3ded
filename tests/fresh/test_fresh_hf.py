"""The fresh-process matrix's Hugging Face rows (see test_fresh_matrix.py)."""

from __future__ import annotations

import pytest

from freshkit import cli_chain


@pytest.mark.parametrize("family", ["hf-full", "hf-lora"])
def test_every_cli_path_works_in_a_fresh_process_hf(family, workdir, request):
    cli_chain(family, workdir, request)
