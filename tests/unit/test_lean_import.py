"""Unit tests (a second each, one fresh interpreter): what a training process imports."""

from __future__ import annotations

import json
import subprocess
import sys

UNUSED = ("wandb", "matplotlib", "scipy")


def _imported_after(code: str) -> dict[str, bool]:
    probe = f"import sys; {code}; import json; print(json.dumps({{m: m in sys.modules for m in {UNUSED!r}}}))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_train_entry_imports_no_plotting_scipy_or_wandb() -> None:
    assert _imported_after("import lightning_gapsl.train") == dict.fromkeys(UNUSED, False)


def test_hidden_packages_still_import_when_asked() -> None:
    # Hidden from torchmetrics' probes during Lightning's import only, not uninstalled.
    seen = _imported_after("import lightning_gapsl.train, scipy.special, matplotlib")
    assert seen["scipy"] and seen["matplotlib"] and not seen["wandb"]
