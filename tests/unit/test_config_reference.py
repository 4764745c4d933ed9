"""docs/reference/ is generated: every config key documented, both pages current."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "config_reference", ROOT / "scripts" / "config_reference.py"
)
config_reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(config_reference)


def test_a_field_without_documentation_is_found():
    @dataclasses.dataclass
    class Sample:
        documented: int = 1
        """What it holds."""
        bare: int = 2

    assert config_reference.field_docs(Sample) == {"documented": "What it holds."}


def test_every_key_is_documented():
    assert config_reference.undocumented() == []


def test_the_reference_page_is_current():
    """Regenerate with `python scripts/config_reference.py` after changing a key."""
    assert config_reference.PAGE.read_text() == config_reference.page()


def test_the_summary_reference_page_is_current():
    assert config_reference.SUMMARY_PAGE.read_text() == config_reference.summary_page()


def test_an_undocumented_summary_key_is_found():
    from lightning_gapsl.callbacks.summary_fields import undocumented

    summary = {
        "test_acc_mean": 0.5,
        "test_f1_mean": 0.4,  # a registered metric: a documented pattern
        "surprise": 1,
        "history": [{"epoch": 0, "gapsl/leaders": 2.0, "new_key": 1}],
        "privacy": {"leakage": 0.2, "odd": 0},
    }
    assert undocumented(summary) == ["history[].new_key", "privacy.odd", "surprise"]
