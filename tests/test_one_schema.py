"""One config schema: every setting is defined once, in genlab.config, and the validated
sections themselves are what the code that uses them receives. These guards fail when a
runtime copy of a section (a "twin" with its own defaults) comes back, when a consumer takes
something other than the section, or when a section has a key its consumers never read."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from genlab import config
from genlab.data import augment, clean, dedup, split, tabular
from genlab.finetune import lora, prepare
from genlab.models import gan, gpt, heads, vae

SRC = Path(config.__file__).parent
SCHEMA_FILES = {SRC / "config.py", SRC / "tuning" / "schema.py"}
# The runtime copies of config sections that existed before issue 13; none may come back.
OLD_TWINS = (
    "CleanOptions",
    "DedupOptions",
    "SplitOptions",
    "AugmentConfig",
    "VAEConfig",
    "GANConfig",
    "LoraSpec",
    "FinetuneSpec",
    "GPTSpec",
    "ReadOptions",
)


def _sections() -> dict[str, type[BaseModel]]:
    return {
        name: obj
        for name, obj in vars(config).items()
        if isinstance(obj, type) and issubclass(obj, config.Section) and obj is not config.Section
    }


def _classes_with_defaults(path: Path) -> list[tuple[str, dict[str, bool]]]:
    """(class name, {annotated field: has a default}) for each class defined in `path`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef):
            fields = {
                stmt.target.id: stmt.value is not None
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
            out.append((node.name, fields))
    return out


def find_twins(root: Path) -> list[str]:
    """Classes outside the schema that repeat three or more keys of one config section and
    give at least two of them defaults of their own: a second definition of those settings."""
    found = []
    sections = {name: set(s.model_fields) for name, s in _sections().items()}
    for path in sorted(root.rglob("*.py")):
        if path in SCHEMA_FILES:
            continue
        for cls, fields in _classes_with_defaults(path):
            for section, keys in sections.items():
                shared = keys & set(fields)
                if len(shared) >= 3 and sum(fields[k] for k in shared) >= 2:
                    found.append(f"{path.relative_to(root)}::{cls} ~ {section} {sorted(shared)}")
    return found


def test_no_class_in_the_package_copies_a_config_section():
    assert find_twins(SRC) == []


def test_the_twin_finder_finds_a_twin(tmp_path):
    """The guard above can fail: a dataclass copying data.dedup's keys with defaults is found."""
    fields = ("exact: bool = True", "near: bool = True", "threshold: float = 0.8")
    source = "class Options:\n" + "".join(f"    {line}\n" for line in fields)
    (tmp_path / "copy.py").write_text(source, encoding="utf-8")
    assert find_twins(tmp_path) == [
        "copy.py::Options ~ DedupSection ['exact', 'near', 'threshold']"
    ]


def test_old_twin_names_are_gone():
    pattern = re.compile(rf"\b({'|'.join(OLD_TWINS)})\b")
    hits = [
        f"{p.relative_to(SRC)}: {m.group(0)}"
        for p in SRC.rglob("*.py")
        for m in pattern.finditer(p.read_text(encoding="utf-8"))
    ]
    assert hits == []


# Each section, the functions that consume it (with the parameter that takes it), and the
# modules whose code reads its keys.
CONSUMERS = {
    config.CleanSection: (
        [(clean.clean, "options"), (clean.transform, "options")],
        [clean],
    ),
    config.DedupSection: ([(dedup.deduplicate, "options"), (dedup.near_dedup, "options")], [dedup]),
    config.SplitSection: ([(split.split_documents, "options")], [split]),
    config.AugmentSection: (
        [(augment.Augmenter.__init__, "config"), (augment.make_augmenter, "config")],
        [augment],
    ),
    config.VAESection: ([(vae.VAE.__init__, "config")], [vae]),
    config.GANSection: (
        [
            (gan.GAN.__init__, "config"),
            (gan.Generator.__init__, "config"),
            (gan.Discriminator.__init__, "config"),
        ],
        [gan, "training/image_tasks.py"],
    ),
    config.LoraSection: ([(lora.apply_lora, "spec")], [lora]),
    config.FinetuneConfig: (
        [(prepare.prepare_model, "spec"), (prepare.optimizer_groups, "spec")],
        [prepare, "training/lm_model.py", "training/lm_task.py"],
    ),
    config.ClassifySection: (
        [(heads.ClassificationHead.__init__, "spec")],
        [heads, "training/classifier_model.py", "training/classify_task.py", "data/labelled.py"],
    ),
}


@pytest.mark.parametrize("section", list(CONSUMERS), ids=lambda s: s.__name__)
def test_consumers_take_the_section_itself(section):
    functions, _ = CONSUMERS[section]
    for fn, param in functions:
        assert typing.get_type_hints(fn)[param] is section, fn.__qualname__


def test_gpt_and_readers_take_the_schema_sections():
    assert typing.get_type_hints(gpt.GPT.__init__)["config"] is config.ModelConfig
    for reader in (tabular.read_jsonl, tabular.read_csv, tabular.read_path):
        assert typing.get_type_hints(reader)["options"] is config.DataConfig


@pytest.mark.parametrize("section", list(CONSUMERS), ids=lambda s: s.__name__)
def test_every_key_of_the_section_is_read_by_its_consumers(section):
    """A key no consumer reads (`.key`) would be written to config.yaml and change nothing."""
    _, modules = CONSUMERS[section]
    code = "\n".join(
        (SRC / m if isinstance(m, str) else Path(m.__file__)).read_text(encoding="utf-8")
        for m in modules
    )
    unread = [key for key in section.model_fields if not re.search(rf"\.{key}\b", code)]
    assert unread == []
