"""Distribution functions for the gate statistics: normal, Student t, binomial and Poisson tails,
their quantiles, the one-sided confidence bounds the gates use, and the always-valid mixture
likelihood ratio behind the sequential FAIL verdicts.

The tails come from scipy (``scipy.special`` for the regularized incomplete beta and gamma
functions, which take real-valued arguments: the gates divide counts by an overdispersion
factor, so counts are not integers; ``scipy.stats`` for the normal and t quantiles).
"""

from __future__ import annotations

import math

from scipy import special
from scipy.stats import norm, t


def norm_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return float(norm.sf(z))


def norm_ppf(p: float) -> float:
    """The standard normal quantile."""
    if not 0 < p < 1:
        raise ValueError(f"norm_ppf needs 0 < p < 1, got {p}")
    return float(norm.ppf(p))


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), a, b > 0."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    return float(special.betainc(a, b, min(max(x, 0.0), 1.0)))


def gammainc(a: float, x: float) -> float:
    """The regularized lower incomplete gamma function P(a, x), a > 0."""
    if a <= 0:
        raise ValueError(f"gammainc needs a > 0, got {a}")
    return float(special.gammainc(a, max(x, 0.0)))


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
    return float(special.betaincinv(k + 1, n - k, 1 - alpha))


def binom_lower(k: float, n: float, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound on p at level 1 - alpha, from k of n."""
    if k <= 0:
        return 0.0
    return float(special.betaincinv(k, n - k + 1, alpha))


def poisson_sf(k: float, mu: float) -> float:
    """P(X >= k) for X ~ Poisson(mu); real-valued k allowed."""
    if k <= 0:
        return 1.0
    return gammainc(k, mu) if mu > 0 else 0.0


def poisson_upper(k: float, alpha: float) -> float:
    """One-sided (Garwood) upper bound on a Poisson mean at level 1 - alpha, from k events."""
    return float(special.gammaincinv(k + 1, 1 - alpha))


def t_sf(x: float, df: float) -> float:
    """P(T > x) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(df):
        return norm_sf(x)
    return float(t.sf(x, df))


def t_ppf(p: float, df: float) -> float:
    """Student's t quantile."""
    if not 0 < p < 1:
        raise ValueError(f"t_ppf needs 0 < p < 1, got {p}")
    return float(norm.ppf(p)) if math.isinf(df) else float(t.ppf(p, df))


def msprt_log_lr(excess: float, var: float, tau2: float) -> float:
    """Log of the normal-mixture likelihood ratio (Robbins' mixture SPRT) for ``excess ~ N(theta, var)``
    against ``theta = 0``, mixing ``theta ~ N(0, tau2)``.

    Its exponential is a nonnegative martingale under ``theta = 0`` whatever the sample size, so by
    Ville's inequality ``P(sup_t LR_t >= 1/a) <= a``: a test that rejects when it crosses ``1/a`` keeps
    its level however often it looks (Johari et al., "Always valid inference", 2017). One-sided use
    (reject only for ``excess > 0``) at ``1/(2a)`` has level ``a``, the mixture being symmetric.
    """
    if var <= 0 or tau2 <= 0:
        return math.inf if excess > 0 else 0.0
    return 0.5 * math.log(var / (var + tau2)) + tau2 * excess * excess / (2 * var * (var + tau2))
