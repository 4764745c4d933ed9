"""A claim checked on paired seeds: variant ``a`` against variant ``b`` run at the same
seeds, one metric, a direction stated before running.

An experiment's ``paired:`` list (each entry: ``a``, ``b``, ``key``, ``expect`` = lower
or higher, optional ``claim``) adds a section to its results.md. The verdict is
"reproduced" only when the difference a - b has the expected sign on every seed and its
95% t-interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy.stats import t as student_t

EXPECT = ("lower", "higher")


def metric(summary: dict, key: str) -> float | None:
    """A summary's number: a top-level key, else one of its ``privacy`` block."""
    value = summary.get(key)
    if value is None:
        value = (summary.get("privacy") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def paired_difference(a: Sequence[float], b: Sequence[float], expect: str) -> dict:
    """Per-seed differences a - b, their mean, sample std, 95% t-interval and verdict."""
    if expect not in EXPECT:
        raise ValueError(f"paired expect={expect!r} is not valid; choose one of: lower, higher")
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(
            f"paired needs the same seeds on both sides, 2 or more: {len(a)}, {len(b)}"
        )
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, std = statistics.fmean(diffs), statistics.stdev(diffs)
    half = student_t.ppf(0.975, len(diffs) - 1) * std / math.sqrt(len(diffs))
    sign = -1.0 if expect == "lower" else 1.0
    one_sign = all(sign * d > 0 for d in diffs)
    excludes_zero = sign * (mean - sign * half) > 0  # the interval's near end is past 0
    return {
        "diffs": diffs,
        "mean": mean,
        "std": std,
        "low": mean - half,
        "high": mean + half,
        "one_sign": one_sign,
        "excludes_zero": excludes_zero,
        "verdict": "reproduced" if one_sign and excludes_zero else "not reproduced",
    }


def paired_markdown(
    checks: Sequence[dict], summaries: Sequence[dict], labels: Sequence[str], seeds: Sequence
) -> str:
    """The ``paired:`` section: one paragraph per check (runs matched by seed)."""
    lines = ["", "#### Paired checks (direction stated before running)", ""]
    for check in checks:
        a, b, key, expect = check["a"], check["b"], check["key"], check["expect"]
        by = {
            (lab, s.get("seed")): metric(s, key) for s, lab in zip(summaries, labels, strict=True)
        }
        both = [x for x in seeds if by.get((a, x)) is not None and by.get((b, x)) is not None]
        if len(both) < 2:
            lines += [f"- {a} vs {b} ({key}): fewer than 2 paired seeds ran; no verdict.", ""]
            continue
        r = paired_difference([by[(a, x)] for x in both], [by[(b, x)] for x in both], expect)
        per_seed = ", ".join(f"{d:+.4f}" for d in r["diffs"])
        claim = f"{check['claim']}: " if check.get("claim") else ""
        lines += [
            f"- {claim}{key}({a}) - {key}({b}), expected {expect}; seeds "
            f"{', '.join(map(str, both))}: {per_seed}; mean {r['mean']:+.4f} (seed std "
            f"{r['std']:.4f}), 95% t-interval [{r['low']:+.4f}, {r['high']:+.4f}]; "
            f"one sign on every seed: {'yes' if r['one_sign'] else 'no'}; "
            f"**{r['verdict']}**.",
            "",
        ]
    return "\n".join(lines)
