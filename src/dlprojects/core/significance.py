"""Whether one classifier beats another or the difference is noise.

On the same test examples: the paired difference in accuracy with Wald's interval for paired
proportions and McNemar's exact test on the examples the two get differently (`paired`). Over
seeds: Welch's interval and test (`across_seeds`). `python -m dlprojects.compare` prints them;
the registry promotes a model only on a significant gain, from the per-example correctness each
version records (`pack`, `unpack`).
"""

from __future__ import annotations

import base64
import hashlib
import math
import zlib
from dataclasses import dataclass

import numpy as np


class NotComparable(ValueError):
    """Two sets of results that are not on the same test examples."""


@dataclass(frozen=True)
class Paired:
    """B against A on the same test examples."""

    n: int
    accuracy_a: float
    accuracy_b: float
    only_a: int  # examples A gets right and B wrong
    only_b: int
    low: float  # 95% (1 - alpha) interval of accuracy_b - accuracy_a
    high: float
    p_value: float  # McNemar's exact test

    @property
    def difference(self) -> float:
        return self.accuracy_b - self.accuracy_a


def paired(correct_a: np.ndarray, correct_b: np.ndarray, alpha: float = 0.05) -> Paired:
    """The difference in accuracy of two classifiers' per-example correctness on the same
    examples: Wald's interval for paired proportions (Agresti, Categorical Data Analysis, 10.1)
    and McNemar's exact (binomial) test."""
    from scipy.stats import binomtest, norm

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise NotComparable(f"{a.size} and {b.size} examples")
    n = a.size
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    difference = (only_b - only_a) / n
    spread = math.sqrt(max((only_a + only_b) / n - difference ** 2, 0.0) / n)
    z = float(norm.ppf(1 - alpha / 2))
    discordant = only_a + only_b
    p_value = binomtest(only_b, discordant, 0.5).pvalue if discordant else 1.0
    return Paired(n, float(a.mean()), float(b.mean()), only_a, only_b, difference - z * spread,
                  difference + z * spread, float(p_value))


@dataclass(frozen=True)
class AcrossSeeds:
    mean_a: float
    mean_b: float
    low: float
    high: float
    p_value: float  # Welch's t-test


def across_seeds(a: list[float], b: list[float], alpha: float = 0.05) -> AcrossSeeds:
    """The difference of mean accuracy over seeds, with Welch's interval and test."""
    from scipy.stats import t, ttest_ind

    if min(len(a), len(b)) < 2:
        raise NotComparable("across seeds needs at least two runs a side; give one run a side "
                            "for the paired test")
    mean_a, mean_b = float(np.mean(a)), float(np.mean(b))
    var_a, var_b = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    spread = math.sqrt(var_a + var_b)
    if spread == 0:
        same = mean_a == mean_b
        return AcrossSeeds(mean_a, mean_b, mean_b - mean_a, mean_b - mean_a, 1.0 if same else 0.0)
    freedom = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    margin = float(t.ppf(1 - alpha / 2, freedom)) * spread
    p_value = float(ttest_ind(b, a, equal_var=False).pvalue)
    return AcrossSeeds(mean_a, mean_b, mean_b - mean_a - margin, mean_b - mean_a + margin, p_value)


def verdict(low: float, high: float, p_value: float, alpha: float) -> str:
    """B better, A better or no significant difference: p at most `alpha` (1: any difference)
    and the interval on one side of 0."""
    if p_value <= alpha and low > 0:
        return "B better"
    if p_value <= alpha and high < 0:
        return "A better"
    return "no significant difference"


def pack(correct: np.ndarray) -> str:
    """Per-example correctness as short text (a registered version's tag): the count, then the
    bits, deflated and base64-encoded (10,000 test images: about 600 characters)."""
    bits = np.packbits(np.asarray(correct, dtype=bool))
    return f"{len(correct)}:" + base64.b64encode(zlib.compress(bits.tobytes(), 9)).decode()


def unpack(text: str) -> np.ndarray:
    """The correctness `pack` wrote; ValueError when the text is not one."""
    count, _, data = text.partition(":")
    try:
        bits = np.frombuffer(zlib.decompress(base64.b64decode(data, validate=True)), np.uint8)
        n = int(count)
    except (ValueError, zlib.error) as error:
        raise ValueError(f"not packed correctness: {error}") from None
    if not 0 < n <= 8 * bits.size:
        raise ValueError(f"not packed correctness: {n} examples in {bits.size} bytes")
    return np.unpackbits(bits)[:n].astype(bool)


def examples_digest(labels: np.ndarray) -> str:
    """Which test examples, in which order, a correctness vector is of: a digest of the labels
    (two results pair only when these match)."""
    return hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]
