"""docs/CONFIG.md is the config dataclasses' own reference, and stays so."""

import dataclasses
import typing
from pathlib import Path

from bflsim.config import ExperimentConfig
from bflsim.config.reference import config_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def _keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = f"{prefix}.{field.name}" if prefix else field.name
        sections = [t for t in (hints[field.name], *typing.get_args(hints[field.name])) if dataclasses.is_dataclass(t)]
        if sections:  # a section, or an optional one ([loop])
            yield from _keys(sections[0], key)
        else:
            yield key


def test_docs_config_md_is_what_the_code_generates():
    assert DOC.read_text() == config_reference(), "run: bflsim config-reference > docs/CONFIG.md"


def test_every_key_of_every_section_is_documented_with_its_default():
    text = config_reference()
    keys = list(_keys(ExperimentConfig))
    assert len(keys) > 80
    for key in keys:
        assert f"| `{key}` |" in text, key
    assert "| `federation.rounds` | integer | `5` |" in text
    assert '| `ledger.mode` | `"per-node"` \\| `"batched"` | `"per-node"` |' in text
    assert '| `data.label_mode` | `"multiclass"` \\| `"binary"` | `"multiclass"` |' in text
    assert ":data:" not in text and ":func:" not in text
    assert "| `loop.threshold` | integer | `10` |" in text and "## `[loop]`" in text
