"""Import Lightning without the optional packages its import drags in for nothing.

Lightning checks torchmetrics' version by importing it, and torchmetrics' ``__init__``
imports ``scipy.signal`` (a compatibility patch for an audio metric) and
``matplotlib.pyplot`` (for its ``.plot()`` methods) whenever they are installed, which
they are here (scikit-learn needs scipy; the comparison plots need matplotlib). That is
89 MiB of resident memory in every training process (measured: `import lightning` takes
398 MiB with them, 309 MiB without; ``python -m lightning_gapsl.bench --preset memory``),
a fifth of a 16-client MNIST run, spent on code no run calls.

`import_lightning` imports Lightning while lightning_utilities' availability probes,
which torchmetrics asks, answer "absent" for those packages, then restores the probes.
Trade-off: in this process torchmetrics' own ``.plot()`` methods and scipy-backed
metrics see the packages as missing; this project uses neither (its plots import
matplotlib directly, scikit-learn imports scipy directly, both unaffected).
"""

from __future__ import annotations

import sys

# Top-level packages torchmetrics imports at import time only because they are present.
UNUSED_BY_RUNS = frozenset({"matplotlib", "scipy"})


def import_lightning(hidden: frozenset[str] = UNUSED_BY_RUNS) -> None:
    """Import ``lightning`` (and so torchmetrics) with ``hidden`` looking uninstalled.

    A no-op when torchmetrics is imported already: its probes ran, nothing to save.
    """
    if "torchmetrics" in sys.modules:
        import lightning

        return
    import lightning_utilities.core.imports as probes

    saved = probes.package_available, probes.module_available, probes.RequirementCache
    package_available, module_available = saved[0], saved[1]

    def is_hidden(name: str) -> bool:
        return name.split(".")[0] in hidden

    class Requirement(saved[2]):
        def _check_requirement(self) -> None:
            name = self.requirement.split(";")[0]
            for mark in "<>=!~[ ":
                name = name.split(mark)[0]
            if is_hidden(name):
                self.available, self.message = False, f"{name} hidden while importing"
            else:
                super()._check_requirement()

    probes.package_available = lambda n: not is_hidden(n) and package_available(n)
    probes.module_available = lambda n: not is_hidden(n) and module_available(n)
    probes.RequirementCache = Requirement
    try:
        import lightning  # noqa: F401
    finally:
        probes.package_available, probes.module_available, probes.RequirementCache = saved
