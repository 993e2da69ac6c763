"""Paired comparison of two table cells over seeds: mean difference, 95% interval, detectable effect, verdict.

Seed s of one column and seed s of the other share their data order and initialisation (and, for a
student, its teacher), so the per-seed difference removes that shared noise: the paired interval is
the one that can tell a small gain from seed luck.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.975  # upper quantile of a two-sided 95% interval
POWER = 0.80
# Student-t quantiles t_{q,df} for df = 1..30, as printed in textbook tables (3 decimals). Past 30 the
# normal quantile is within 4% (t_{0.975,30} = 2.042 against 1.960); a table cell has a handful of seeds.
T_TABLE = {
    CONFIDENCE: (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042),
    POWER: (1.376, 1.061, 0.978, 0.941, 0.920, 0.906, 0.896, 0.889, 0.883, 0.879,
            0.876, 0.873, 0.870, 0.868, 0.866, 0.865, 0.863, 0.862, 0.861, 0.860,
            0.859, 0.858, 0.858, 0.857, 0.856, 0.856, 0.855, 0.855, 0.854, 0.854),
}
Z_TABLE = {CONFIDENCE: 1.960, POWER: 0.842}

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


def t_quantile(q: float, df: int) -> float:
    """t_{q,df} for q in ``T_TABLE`` (``CONFIDENCE`` or ``POWER``); the normal quantile past df 30."""
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    table = T_TABLE[q]
    return table[df - 1] if df <= len(table) else Z_TABLE[q]


@dataclass(frozen=True)
class Paired:
    """d_s = a(s) - b(s) for the seeds s present in both cells, in seed order."""

    seeds: tuple[int, ...]
    d: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.d)

    @property
    def mean(self) -> float | None:
        return sum(self.d) / self.n if self.n else None

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (ddof=1): needs two pairs."""
        if self.n < 2:
            return None
        mean = sum(self.d) / self.n
        return math.sqrt(sum((x - mean) ** 2 for x in self.d) / (self.n - 1))

    @property
    def se(self) -> float | None:
        return self.sd / math.sqrt(self.n) if self.n >= 2 else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """mean ± t_{0.975,n-1} · sd/√n, the two-sided 95% Student-t interval."""
        if self.n < 2:
            return None
        half = t_quantile(CONFIDENCE, self.n - 1) * self.se
        return self.mean - half, self.mean + half

    @property
    def mde(self) -> float | None:
        """(t_{0.975,n-1} + t_{0.80,n-1}) · sd/√n: the smallest true mean difference found 80% of the time."""
        if self.n < 2:
            return None
        return (t_quantile(CONFIDENCE, self.n - 1) + t_quantile(POWER, self.n - 1)) * self.se


    @property
    def t(self) -> float | None:
        """mean / (sd/√n), the paired t statistic; None without two pairs or with zero spread."""
        return self.mean / self.se if self.se else None

    @property
    def p(self) -> float | None:
        """Two-sided p of the paired t test of mean 0 (df = n - 1)."""
        return t_two_sided_p(self.t, self.n - 1) if self.t is not None else None

    @property
    def p_sign_flip(self) -> float | None:
        """Two-sided p of the exact paired permutation (sign-flip) test: no normality assumed."""
        return sign_flip_p(self.d) if self.n else None


def sign_flip_p(d: Sequence[float]) -> float:
    """Exact two-sided p of the sign-flip test of a paired mean of 0: under that null each d_s is as likely to have
    either sign, so p is the share of the 2^n sign assignments whose |sum| is at least the observed |sum| (the
    observed one counted). Its smallest value is 2 / 2^n: 0.0625 for 5 pairs, 0.0078 for 8."""
    n = len(d)
    if not 1 <= n <= 20:
        raise ValueError(f"an exact sign-flip test enumerates 2^n assignments: n in 1..20, got {n}")
    observed = abs(sum(d)) - 1e-9 * (1 + sum(abs(x) for x in d))  # ties (float noise) count as extreme
    hits = 0
    for mask in range(2 ** n):
        total = sum(-x if mask >> i & 1 else x for i, x in enumerate(d))
        hits += abs(total) >= observed
    return hits / 2 ** n


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with integer ``df``: 1 - A(t|df), Abramowitz & Stegun 26.7.3-4,
    a finite series in theta = atan(|t| / sqrt(df)) (exact for integer df, no special functions)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        a = 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        a = math.sin(theta) * total
    return min(1.0, max(0.0, 1.0 - a))


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest of m is multiplied by
    m - i + 1 and kept at least as large as the one before it; family-wise error at most the level."""
    m = len(p)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """Pair two cells (seed -> error) by seed; a seed missing from either cell is left out."""
    seeds = tuple(sorted(set(a) & set(b)))
    return Paired(seeds, tuple(a[s] - b[s] for s in seeds))


MEDIAN_LEVEL = 0.90  # the least coverage of the median's interval below
MEDIAN_MIN_N = 5  # fewer seeds give no order-statistic interval of the median at that coverage


def median_interval(values: Sequence[float], level: float = MEDIAN_LEVEL) -> tuple[float, float, float] | None:
    """The distribution-free interval of the median of ``values``' population from order statistics:
    [x_(k), x_(n+1-k)] covers the median with probability 1 - 2 P(Bin(n, 1/2) <= k - 1); k is the largest
    whose coverage is at least ``level``. Returns (low, high, coverage); None under :data:`MEDIAN_MIN_N` values.
    Five values give [min, max] at 1 - 2/32 = 93.75%."""
    n = len(values)
    if n < MEDIAN_MIN_N:
        return None
    x = sorted(values)

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = max((k for k in range(1, n // 2 + 1) if coverage(k) >= level), default=1)
    return x[k - 1], x[n - k], coverage(k)


def verdict(interval: tuple[float, float]) -> str:
    """The word for a claim whose side is d > 0: the interval above 0, below 0, or containing it."""
    low, high = interval
    if low > 0:
        return REPRODUCED
    if high < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


__all__ = ["INCONCLUSIVE", "NOT_REPRODUCED", "REPRODUCED", "Paired", "holm", "median_interval", "paired", "sign_flip_p",
           "t_quantile", "t_two_sided_p", "verdict"]
