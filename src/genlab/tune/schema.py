"""The `tune:` config section (owned by the tuner; genlab.config embeds it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class TuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
