"""The docs' own check: every command the README, docs/, BENCHMARKS.md, experiments/ and
slurm/ pages show is one the project accepts today.

    python scripts/check_docs.py      # one line per command that would fail; exit 1 if any

Most shown commands are grids of hours, so a command is checked, not run: a train command's
overrides compose into a validated config (the same validation a run does before any
process starts), a comparison names an experiment file that exists and a valid stage, a
bench preset exists, a module or script exists, a results folder a tool reads exists.
The end-to-end tests run the short ones for real. Placeholders (`METHOD`, `S`, `DIR`,
`<experiment>`, `/path/to/...`, `...`) stand for a user's value: a command holding one
is checked up to it.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = (
    "README.md",
    "BENCHMARKS.md",
    "docs/**/*.md",
    "experiments/*.md",
    "slurm/README.md",
)
# A command: optional environment and /usr/bin/time, then the project's entry points.
START = re.compile(
    r"^(?:(?:[A-Z_]+=\S+|/usr/bin/time -f %M)\s+)*"
    r"(?P<cmd>(?:python -m lightning_gapsl\.[\w.]+|lgapsl-(?:train|compare|bench)|python \S+\.py)\b.*)$"
)
# Values a reader replaces with their own; a placeholder stands for any valid value.
PLACEHOLDER = re.compile(
    r"^(?:\.\.\.|\[-.*\]|\[[A-Z_ .]+\]|[A-Z][A-Z_]*|<\w+>|.*<\w+>.*|.*/path/to/.*|.*/home/me/.*|.*\.\.\.)$"
)
STAGES = {"tune", "final", "all", "long", "plan"}
COMPARE_KEYS = {"jobs", "threads", "out_dir", "stage"}


def code_spans(text: str) -> Iterator[str]:
    """The text of fenced code blocks, line by line, and of inline code spans (which may
    wrap over lines), with shell line continuations joined."""
    for block in re.findall(r"^\s*```[^\n]*\n(.*?)^\s*```", text, re.M | re.S):
        yield from re.sub(r"\\\n\s*", " ", block).splitlines()
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)
    joined = re.sub(r"\\\n\s*", " ", text)
    yield from re.findall(r"^(?: {4}|\t)(.*)$", joined, re.M)  # indented code blocks
    for span in re.findall(r"`([^`]+)`", text):
        yield " ".join(re.sub(r"\\\n", " ", span).split())


def commands(text: str) -> list[str]:
    found = []
    for line in code_spans(text):
        line = re.sub(r"^\$\s+", "", line.strip())
        m = START.match(line)
        if m:
            found.append(" ".join(re.sub(r"\s+#.*$", "", m.group("cmd")).split()))
    return found


def _split(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd)
    except ValueError:
        return cmd.split()


def problem(cmd: str) -> str | None:
    """Why ``cmd`` would not be accepted, or None."""
    words = _split(cmd)
    if words[:2] == ["python", "-m"]:
        module, args = words[2], words[3:]
    elif words[0].startswith("lgapsl-"):
        module, args = "lightning_gapsl." + words[0].removeprefix("lgapsl-"), words[1:]
    else:
        script, args = words[1], words[2:]
        if not (ROOT / script).is_file():
            return f"no file {script}"
        for arg in args:
            if arg.startswith("experiments/results/") and not PLACEHOLDER.match(arg):
                if not (ROOT / arg).exists():
                    return f"no folder {arg}"
        return None
    if importlib.util.find_spec(module) is None:
        return f"no module {module}"
    if not args or any(_users_own(a) for a in args):
        return None  # the tool named in prose, or run on a user's own config: checked up to it
    args = [a for a in args if not PLACEHOLDER.match(a.partition("=")[2] or a)]
    if module == "lightning_gapsl.train":
        return _train_problem(args)
    if module == "lightning_gapsl.compare":
        return _compare_problem(args)
    if module == "lightning_gapsl.bench":
        return _bench_problem(args)
    return None


def _users_own(arg: str) -> bool:
    """An argument that only exists on a user's machine: their plugin, config folder or
    experiment name."""
    key, _, value = arg.partition("=")
    if key == "plugins":
        mods = [m.strip() for m in value.strip("[]").split(",") if m.strip()]
        return any(importlib.util.find_spec(m) is None for m in mods)
    return key in ("hydra.searchpath", "experiment") and bool(PLACEHOLDER.match(value))


def _train_problem(args: list[str]) -> str | None:
    from lightning_gapsl.cli import compose
    from lightning_gapsl.config import ConfigError

    overrides = []
    for arg in args:
        if arg == "-m" or arg.startswith(("hydra/", "hydra.")):
            continue  # the launcher and Hydra's own settings: not run config
        key, _, value = arg.partition("=")
        if "," in value and not value.startswith("["):
            value = value.split(",")[0]  # a sweep: its first point
        if not PLACEHOLDER.match(value):
            overrides.append(f"{key}={value}" if _ else key)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            compose(overrides, output_dir=tmp)
    except ConfigError as err:
        return str(err)
    return None


def _compare_problem(args: list[str]) -> str | None:
    from lightning_gapsl.compare import missing_experiment

    found = missing_experiment([*args, f"hydra.searchpath=[file://{ROOT / 'experiments/conf'}]"])
    if found:
        return found
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "stage" and value not in STAGES:
            return f"stage={value}: choose one of {sorted(STAGES)}"
        if key not in COMPARE_KEYS | {"experiment"} and not key.startswith(
            ("experiment.", "+experiment.", "hydra.")
        ):
            return f"{key}: not a compare key (valid: {sorted(COMPARE_KEYS)}, experiment.*)"
    return None


def _bench_problem(args: list[str]) -> str | None:
    from lightning_gapsl.bench import OTHER_PRESETS, PRESETS

    if "--preset" in args:
        preset = args[args.index("--preset") + 1]
        if preset not in {*PRESETS, *OTHER_PRESETS}:
            return f"--preset {preset}: choose one of {sorted({*PRESETS, *OTHER_PRESETS})}"
    return None


def pages() -> list[Path]:
    return sorted({p for pattern in PAGES for p in ROOT.glob(pattern)})


def failures() -> list[str]:
    lines = []
    for page in pages():
        for cmd in commands(page.read_text()):
            why = problem(cmd)
            if why:
                lines.append(f"{page.relative_to(ROOT)}: `{cmd}`: {why}")
    return lines


if __name__ == "__main__":
    bad = failures()
    print("\n".join(bad) or "every command in the docs is accepted")
    sys.exit(1 if bad else 0)
