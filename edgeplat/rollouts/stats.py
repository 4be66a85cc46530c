"""Distribution functions for the gate statistics: normal, Student t, binomial and Poisson tails,
their quantiles, and the one-sided confidence bounds the gates use.

scipy is not a dependency: the regularized incomplete beta and gamma functions, from which the
binomial, Poisson and Student t tails follow, are implemented here with the usual continued
fractions and tested against known values. Counts may be real-valued: the gates divide them by
an overdispersion factor.
"""

from __future__ import annotations

import math

_EPS = 1e-15
_TINY = 1e-300


def norm_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def _bisect(f, lo: float, hi: float, target: float, iters: int = 200) -> float:
    """x in [lo, hi] with f(x) = target for an increasing f."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def norm_ppf(p: float) -> float:
    """The standard normal quantile."""
    if not 0 < p < 1:
        raise ValueError(f"norm_ppf needs 0 < p < 1, got {p}")
    return _bisect(lambda z: 1 - norm_sf(z), -40.0, 40.0, p)


def _betacf(a: float, b: float, x: float) -> float:
    # Lentz's continued fraction for the incomplete beta (Numerical Recipes 6.4).
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > _TINY else _TINY)
        c = 1 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > _TINY else _TINY)
        c = 1 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), a, b > 0."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def gammainc(a: float, x: float) -> float:
    """The regularized lower incomplete gamma function P(a, x), a > 0."""
    if a <= 0:
        raise ValueError(f"gammainc needs a > 0, got {a}")
    if x <= 0:
        return 0.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series
        term = total = 1 / a
        ap = a
        for _ in range(100_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return total * math.exp(log_front)
    b = x + 1 - a  # continued fraction for Q = 1 - P
    c, d = 1 / _TINY, 1 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return 1 - math.exp(log_front) * h


def binom_sf(k: float, n: float, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p); real-valued k and n allowed (scaled counts)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    return betainc(k, n - k + 1, p)


def binom_upper(k: float, n: float, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound on p at level 1 - alpha, from k of n."""
    if k >= n:
        return 1.0
    return _bisect(lambda p: betainc(k + 1, n - k, p), 0.0, 1.0, 1 - alpha)


def binom_lower(k: float, n: float, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound on p at level 1 - alpha, from k of n."""
    if k <= 0:
        return 0.0
    return _bisect(lambda p: betainc(k, n - k + 1, p), 0.0, 1.0, alpha)


def poisson_sf(k: float, mu: float) -> float:
    """P(X >= k) for X ~ Poisson(mu); real-valued k allowed."""
    if k <= 0:
        return 1.0
    return gammainc(k, mu) if mu > 0 else 0.0


def poisson_upper(k: float, alpha: float) -> float:
    """One-sided (Garwood) upper bound on a Poisson mean at level 1 - alpha, from k events."""
    hi = k + 10 * math.sqrt(k + 1) + 50
    return _bisect(lambda mu: gammainc(k + 1, mu), 0.0, hi, 1 - alpha)


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(df) or df > 1e7:
        return norm_sf(t)
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1 - tail


def t_ppf(p: float, df: float) -> float:
    """Student's t quantile."""
    if not 0 < p < 1:
        raise ValueError(f"t_ppf needs 0 < p < 1, got {p}")
    bound = 1e6
    return _bisect(lambda t: 1 - t_sf(t, df), -bound, bound, p)
