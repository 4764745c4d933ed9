"""experiments/tools/who_wins.py: ranking over the chosen points' seeds, failed seeds counted."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("who_wins", ROOT / "experiments/tools/who_wins.py")
who_wins = importlib.util.module_from_spec(spec)
spec.loader.exec_module(who_wins)


def _summary(path: Path, acc: float, worst: float, classes: int = 10) -> None:
    path.mkdir(parents=True)
    (path / "summary.json").write_text(
        json.dumps(
            {"test_acc_mean": acc, "test_acc_min": worst, "client_class_acc": [[acc] * classes]}
        )
    )


def test_ranking_and_gapsl_gaps(tmp_path, monkeypatch, capsys):
    (tmp_path / "chosen.yaml").write_text("# gapsl: lin\n# psl: a\n# centralized: c\n")
    for seed, (g, p, c) in enumerate([(0.98, 0.90, 0.99), (0.97, 0.10, 0.99)]):
        _summary(tmp_path / f"gapsl.lin/seed{seed}", g, g)
        _summary(tmp_path / f"psl.a/seed{seed}", p, p - 0.05)
        _summary(tmp_path / f"centralized.c/seed{seed}", c, c)
        _summary(tmp_path / f"gapsl.lin/seed{seed}_e10", 0.99, 0.99)
    _summary(tmp_path / "psl.a/seed100", 0.5, 0.5)  # the tuning seed is not a final seed
    _summary(tmp_path / "psl.b/seed0", 0.99, 0.99)  # a point that was not chosen
    monkeypatch.setattr(sys, "argv", ["who_wins", str(tmp_path)])
    who_wins.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(" 1. gapsl") and "97.50 ± 0.71" in out[0]
    assert out[1].startswith(" 2. psl") and "50.00 ± 56.57" in out[1]
    assert "FAILED seeds [1]" in out[1]  # 10% is chance: counted, and named
    assert out[2].strip().startswith("centralized") and "99.00" in out[2]
    assert out[3] == "gapsl - psl: per seed +8.00, +87.00"
    monkeypatch.setattr(sys, "argv", ["who_wins", str(tmp_path), "--long"])
    who_wins.main()
    assert capsys.readouterr().out.splitlines()[0].startswith(" 1. gapsl        test 99.00")


def test_chance_level_follows_the_number_of_classes(tmp_path, monkeypatch, capsys):
    (tmp_path / "chosen.yaml").write_text("# psl: a\n")
    _summary(tmp_path / "psl.a/seed0", 0.70, 0.70, classes=2)  # below 1.5 / 2: at chance
    monkeypatch.setattr(sys, "argv", ["who_wins", str(tmp_path)])
    who_wins.main()
    assert "FAILED seeds [0]" in capsys.readouterr().out


def test_summary_without_class_map_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "chosen.yaml").write_text("# psl: a\n")
    (tmp_path / "psl.a/seed0").mkdir(parents=True)
    (tmp_path / "psl.a/seed0/summary.json").write_text(json.dumps({"test_acc_mean": 0.9}))
    monkeypatch.setattr(sys, "argv", ["who_wins", str(tmp_path)])
    with pytest.raises(SystemExit, match="client_class_acc"):
        who_wins.main()
