"""`python -m dlprojects.compare`: a real gain found, noise called noise, and its intervals as
wide as they claim (simulated classifiers whose true accuracies are known)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tool_env

from dlprojects.compare import Predictions, across_seeds, paired, verdict
from dlprojects.core.errors import UserError

N = 10_000  # a test set the size of MNIST's and FashionMNIST's


def write(path: Path, correct: np.ndarray, seed: int = 0) -> Path:
    """A predictions CSV as the evaluate stages write it, right where `correct` says."""
    labels = np.random.default_rng(seed).integers(0, 10, len(correct))
    predicted = np.where(correct, labels, (labels + 1) % 10)
    rows = [f"{index},{label},{guess},0.5" for index, (label, guess)
            in enumerate(zip(labels, predicted))]
    path.write_text("index,label,predicted,p_0\n" + "\n".join(rows) + "\n")
    return path


def compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlprojects.compare", *args], cwd=ROOT,
                          env=tool_env(), capture_output=True, text=True, timeout=120)


def seed_of(base: np.ndarray, rng: np.random.Generator, flips: float = 0.04) -> np.ndarray:
    """One seed's correctness: the configuration's, with `flips` of the examples changed."""
    changed = rng.random(len(base)) < flips
    return np.where(changed, rng.random(len(base)) < base.mean(), base)


def test_a_real_gain_is_found_and_its_direction_named(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.random(N) < 0.895
    b = a | (rng.random(N) < 0.10)  # B also gets right about a tenth of what A gets wrong
    found = compare(str(write(tmp_path / "a.csv", a)), str(write(tmp_path / "b.csv", b)))
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().endswith(": B better"), found.stdout
    reverse = compare(str(tmp_path / "b.csv"), str(tmp_path / "a.csv")).stdout
    assert reverse.strip().endswith(": A better"), reverse


def test_two_seeds_of_one_configuration_differ_by_noise_alone(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.random(N) < 0.90
    one, two = seed_of(base, rng), seed_of(base, rng)
    found = compare(str(write(tmp_path / "1.csv", one)), str(write(tmp_path / "2.csv", two)))
    assert found.stdout.strip().endswith(": no significant difference"), found.stdout


def test_the_paired_interval_covers_the_true_difference_as_often_as_it_claims():
    """400 draws of a test set and of two seeds of each of two configurations, B getting right
    3% of what its seed gets wrong (0.3 points more, in expectation): the 95% interval holds that
    true difference in 92-98% of the draws, and two seeds of one configuration are called
    different in at most 8% (the test's 5%, with room for 400 draws)."""
    rng = np.random.default_rng(3)
    covered = called = 0
    truth = 0.03 * (1 - 0.90)  # expected accuracy gain over a test set of 90% base accuracy
    for _ in range(400):
        base = rng.random(N) < 0.90
        a, b = seed_of(base, rng), seed_of(base, rng)
        better = b | ((~b) & (rng.random(N) < 0.03))
        result = paired(Predictions("a", np.arange(N), a), Predictions("b", np.arange(N), better))
        covered += result.low <= truth <= result.high
        noise = paired(Predictions("a", np.arange(N), a), Predictions("b", np.arange(N), b))
        called += verdict(noise.low, noise.high, noise.p_value, 0.05) != "no significant difference"
    assert 0.92 * 400 <= covered <= 0.98 * 400 and called <= 0.08 * 400, (covered, called)


def test_across_seeds_a_shift_is_found_and_a_spread_is_not_mistaken_for_one():
    rng = np.random.default_rng(4)
    same_a, same_b = list(0.90 + 0.002 * rng.standard_normal(5)), list(
        0.90 + 0.002 * rng.standard_normal(5))
    spread = across_seeds(same_a, same_b)
    assert verdict(spread.low, spread.high, spread.p_value, 0.05) == "no significant difference"
    shifted = across_seeds(same_a, [value + 0.01 for value in same_b])
    assert verdict(shifted.low, shifted.high, shifted.p_value, 0.05) == "B better"
    assert shifted.low < 0.01 < shifted.high


def test_several_seeds_a_side_are_paired_in_order_and_compared_over_seeds(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.random(N) < 0.90
    sides = [",".join(str(write(tmp_path / f"{side}{seed}.csv",
                                seed_of(base | (rng.random(N) < (0.05 if side == "b" else 0)),
                                        rng)))
                      for seed in range(3)) for side in "ab"]
    found = compare(sides[0], sides[1])  # A: the configuration without the gain
    assert found.returncode == 0, found.stderr
    lines = found.stdout.strip().splitlines()
    assert len(lines) == 3 * 3 + 1 and lines[-1].startswith("over seeds: A ")
    assert lines[-1].endswith(": B better"), lines[-1]


@pytest.mark.parametrize(("a", "b", "message"), [
    ("missing.csv", "ok.csv", "missing.csv: cannot read it (No such file or directory)"),
    ("ok.csv", "other.csv", "are predictions on different test examples (10000 and 500)"),
    ("ok.csv", "bad.csv", "bad.csv: not a predictions file of an evaluate stage"),
    ("ok.csv,ok.csv", "ok.csv", "2 runs for A and 1 for B; give as many a side"),
    ("no-such-rev:ok.csv", "ok.csv", "no-such-rev:ok.csv: "),
])
def test_what_cannot_be_compared_is_refused_in_one_line(tmp_path, a, b, message):
    write(tmp_path / "ok.csv", np.ones(N, bool))
    write(tmp_path / "other.csv", np.ones(500, bool))
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe not, a\n predictions file")
    refused = subprocess.run([sys.executable, "-m", "dlprojects.compare", a, b], cwd=tmp_path,
                             env=tool_env(), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert message in refused.stderr


def test_compare_needs_the_same_examples_in_process():
    with pytest.raises(UserError, match="different test examples"):
        paired(Predictions("a", np.arange(3), np.ones(3, bool)),
               Predictions("b", np.arange(1, 4), np.ones(3, bool)))
