"""Tests of "A (inside) < B (across)": Welch's t, Mann-Whitney U, a per-image paired test, subsampling, and
the seed's verdict style (|t| against the 99.9 % critical value).

Conventions: the difference is mean(B) - mean(A), so a positive t supports the hypothesis ("intensities vary
less inside objects than across their boundaries"); one-sided p-values test the alternative B > A.
All tests are scipy.stats; only the Welch-Satterthwaite dof of a test from summary statistics (which scipy's
`ttest_ind_from_stats` does not return) and Hedges' g are written out here, and both are checked against
scipy's `ttest_ind(equal_var=False)` in the tests.

Neighbouring pairs are spatially dependent (a pixel is in up to 8 pairs, and neighbouring pairs see the same
texture), so p-values from millions of pairs are far too small. Two remedies sit beside the all-pairs test:
subsampling (every k-th pair, or n random pairs) and the per-image paired test, whose unit is the image.
Keep the subsample sparse (a small fraction of each population): A and B pairs that share a pixel are
correlated too, and a subsample holding most of the B pairs gives a conservative test (on pure noise, 64 x 64
images with 100 pairs per population reject at the nominal 5 %; 40 x 40 images with 150 pairs at about 1-4 %).
Subsampling lowers the count of pairs, not the correlation of pixels within an image: only the per-image test
treats images as the independent units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

SEED_CRITICAL = 3.291  # two-sided 99.9 % critical value of t at infinite dof, as the seed's verdict uses


@dataclass
class WelchResult:
    n_A: int
    n_B: int
    mean_A: float
    sd_A: float
    mean_B: float
    sd_B: float
    difference: float  # mean_B - mean_A
    t: float
    dof: float  # Welch-Satterthwaite
    p_two_sided: float
    p_one_sided: float  # alternative: mean_B > mean_A
    ci_low: float
    ci_high: float
    confidence: float
    hedges_g: float

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def welch_dof(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom from the sample variances (ddof=1) and sizes."""
    qa, qb = var_a / n_a, var_b / n_b
    denominator = qa**2 / (n_a - 1) + qb**2 / (n_b - 1)
    return (qa + qb) ** 2 / denominator if denominator > 0 else math.nan


def hedges_g(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int) -> float:
    """(mean_B - mean_A) / pooled sd, times the small-sample correction J = 1 - 3 / (4 (n_A + n_B) - 9)."""
    if n_a < 2 or n_b < 2:
        return math.nan
    pooled = math.sqrt(((n_a - 1) * sd_a**2 + (n_b - 1) * sd_b**2) / (n_a + n_b - 2))
    if pooled == 0:
        return math.nan if mean_a == mean_b else math.copysign(math.inf, mean_b - mean_a)
    return (mean_b - mean_a) / pooled * (1 - 3 / (4 * (n_a + n_b) - 9))


def _nan_welch(n_a: int, n_b: int, mean_a: float, sd_a: float, mean_b: float, sd_b: float,
               confidence: float) -> WelchResult:
    nan = math.nan
    return WelchResult(n_a, n_b, mean_a, sd_a, mean_b, sd_b, mean_b - mean_a, nan, nan, nan, nan, nan, nan,
                       confidence, nan)


def _moments(x: np.ndarray) -> tuple[int, float, float]:
    x = np.asarray(x)
    n = int(x.size)
    return (n, float(x.mean(dtype=np.float64)) if n else math.nan,
            float(x.std(ddof=1, dtype=np.float64)) if n > 1 else math.nan)


def welch_test(across: np.ndarray, inside: np.ndarray, confidence: float = 0.95) -> WelchResult:
    """Welch's t-test of B (`across`) against A (`inside`): `scipy.stats.ttest_ind(B, A, equal_var=False)`, its
    dof and confidence interval for mean(B) - mean(A), the one-sided p (B > A) and Hedges' g."""
    n_b, mean_b, sd_b = _moments(across)
    n_a, mean_a, sd_a = _moments(inside)
    if n_a < 2 or n_b < 2:
        return _nan_welch(n_a, n_b, mean_a, sd_a, mean_b, sd_b, confidence)
    res = stats.ttest_ind(np.asarray(across, np.float64), np.asarray(inside, np.float64), equal_var=False)
    ci = res.confidence_interval(confidence)
    return WelchResult(n_a, n_b, mean_a, sd_a, mean_b, sd_b, mean_b - mean_a, float(res.statistic), float(res.df),
                       float(res.pvalue), float(stats.t.sf(res.statistic, res.df)), float(ci.low), float(ci.high),
                       confidence, hedges_g(mean_a, sd_a, n_a, mean_b, sd_b, n_b))


def welch_from_summary(n_a: int, mean_a: float, sd_a: float, n_b: int, mean_b: float, sd_b: float,
                       confidence: float = 0.95) -> WelchResult:
    """The same test from sizes, means and sds (ddof=1): `scipy.stats.ttest_ind_from_stats(equal_var=False)`,
    for populations too large to keep (every pair of a dataset)."""
    if n_a < 2 or n_b < 2:
        return _nan_welch(n_a, n_b, mean_a, sd_a, mean_b, sd_b, confidence)
    res = stats.ttest_ind_from_stats(mean_b, sd_b, n_b, mean_a, sd_a, n_a, equal_var=False)
    dof = welch_dof(sd_a**2, n_a, sd_b**2, n_b)
    half = stats.t.ppf(0.5 + confidence / 2, dof) * math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b)
    diff = mean_b - mean_a
    return WelchResult(n_a, n_b, mean_a, sd_a, mean_b, sd_b, diff, float(res.statistic), dof, float(res.pvalue),
                       float(stats.t.sf(res.statistic, dof)), diff - half, diff + half, confidence,
                       hedges_g(mean_a, sd_a, n_a, mean_b, sd_b, n_b))


def mann_whitney(across: np.ndarray, inside: np.ndarray) -> dict[str, Any]:
    """Mann-Whitney U of B against A (`scipy.stats.mannwhitneyu`, asymptotic with tie correction): U, two- and
    one-sided (B > A) p, and the common-language effect P(B > A) + P(tie) / 2 = U / (n_A n_B)."""
    across, inside = np.asarray(across, np.float64), np.asarray(inside, np.float64)
    if across.size == 0 or inside.size == 0:
        return {"mwu_U": math.nan, "mwu_p_two_sided": math.nan, "mwu_p_one_sided": math.nan,
                "mwu_prob_B_greater": math.nan}
    two = stats.mannwhitneyu(across, inside, alternative="two-sided", method="asymptotic")
    one = stats.mannwhitneyu(across, inside, alternative="greater", method="asymptotic")
    return {"mwu_U": float(two.statistic), "mwu_p_two_sided": float(two.pvalue), "mwu_p_one_sided": float(one.pvalue),
            "mwu_prob_B_greater": float(two.statistic) / (across.size * inside.size)}


def per_image_test(mean_inside: np.ndarray, mean_across: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Paired tests over images of mean(B) - mean(A) per image: `scipy.stats.ttest_rel` and `wilcoxon`.

    Images without pairs of one kind (NaN mean: no boundary pair at this distance, or no pair inside) are left
    out and counted in `images_without_pairs`. Fewer than two usable images give NaN and a note.
    """
    a, b = np.asarray(mean_inside, np.float64), np.asarray(mean_across, np.float64)
    usable = np.isfinite(a) & np.isfinite(b)
    a, b = a[usable], b[usable]
    out: dict[str, Any] = {"images_used": int(usable.sum()), "images_without_pairs": int((~usable).sum()),
                           "image_mean_difference": float((b - a).mean()) if usable.any() else math.nan,
                           "image_t": math.nan, "image_dof": math.nan, "image_p_two_sided": math.nan,
                           "image_p_one_sided": math.nan, "image_ci_low": math.nan, "image_ci_high": math.nan,
                           "wilcoxon_W": math.nan, "wilcoxon_p_two_sided": math.nan,
                           "wilcoxon_p_one_sided": math.nan, "image_note": ""}
    if a.size < 2:
        out["image_note"] = f"{a.size} image(s) with pairs of both kinds: a paired test needs at least 2"
        return out
    diff = b - a
    if np.all(diff == diff[0]):
        out["image_note"] = "every image has the same difference: the paired t is undefined"
    else:
        res = stats.ttest_rel(b, a)
        ci = res.confidence_interval(confidence)
        out.update(image_t=float(res.statistic), image_dof=float(res.df), image_p_two_sided=float(res.pvalue),
                   image_p_one_sided=float(stats.t.sf(res.statistic, res.df)), image_ci_low=float(ci.low),
                   image_ci_high=float(ci.high))
    if np.any(diff != 0):
        two = stats.wilcoxon(b, a, alternative="two-sided")
        one = stats.wilcoxon(b, a, alternative="greater")
        out.update(wilcoxon_W=float(two.statistic), wilcoxon_p_two_sided=float(two.pvalue),
                   wilcoxon_p_one_sided=float(one.pvalue))
    return out


def adjust_p(p_values: Any, method: str = "holm") -> np.ndarray:
    """p-values adjusted for testing several hypotheses (one per dataset row): "holm" (Holm's step-down,
    controls the family-wise error like Bonferroni and is never less powerful), "bonferroni", or "bh"
    (Benjamini-Hochberg false discovery rate, `scipy.stats.false_discovery_control`). NaN p-values (tests that
    could not be run) stay NaN and do not count towards the number of tests."""
    p = np.asarray(p_values, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    q = p[ok]
    if method == "bonferroni":
        out[ok] = np.minimum(q * m, 1.0)
    elif method == "holm":
        order = np.argsort(q, kind="stable")
        stepped = np.maximum.accumulate(q[order] * (m - np.arange(m)))
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
        out[ok] = adjusted
    elif method == "bh":
        out[ok] = stats.false_discovery_control(q)
    else:
        raise ValueError(f"method must be 'holm', 'bonferroni' or 'bh', not {method!r}")
    return out


def parse_subsample(spec: str | int | None) -> tuple[str, int]:
    """"every:K" (every K-th pair), "random:N" (N random pairs per population), "none" (all pairs); an int N
    (or its digits, "5000") means "random:N"."""
    if spec is None or spec == "none" or spec == "all":
        return "none", 0
    if isinstance(spec, (int, np.integer)) or str(spec).isdigit():
        kind, value = "random", int(spec)
    else:
        kind, _, value_text = str(spec).partition(":")
        if kind not in ("every", "random") or not value_text.isdigit():
            raise ValueError(f"subsample must be 'every:K', 'random:N' or 'none', not {spec!r}")
        value = int(value_text)
    if value < 1:
        raise ValueError(f"subsample {spec!r}: K and N must be at least 1")
    return kind, value


def subsample(values: np.ndarray, spec: str | int | None, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Every K-th value (from the first), N values drawn without replacement (all of them if fewer), or all."""
    kind, value = parse_subsample(spec)
    values = np.asarray(values)
    if kind == "every":
        return values[::value]
    if kind == "random" and values.size > value:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return values[np.sort(rng.choice(values.size, value, replace=False))]
    return values


def verdict(t: float, dof: float, alpha: float = 0.001, p_value: float | None = None) -> dict[str, Any]:
    """The seed's verdict style: |t| against the two-sided critical value at 1 - alpha (3.291 at infinite dof
    for 99.9 %), next to the exact critical value at this dof (`scipy.stats.t.ppf`) and the exact p."""
    critical_inf = float(stats.norm.ppf(1 - alpha / 2))
    critical = float(stats.t.ppf(1 - alpha / 2, dof)) if np.isfinite(dof) else math.nan
    level = f"{100 * (1 - alpha):g} %"
    if not np.isfinite(t):
        text, reject = "no test (too few pairs)", False
    else:
        reject = abs(t) > critical
        sign = ">" if reject else "<="
        direction = ("A < B: intensities vary less inside objects (supports the hypothesis)" if t > 0 else
                     "A > B: intensities vary MORE inside objects (contradicts the hypothesis)")
        p_text = "" if p_value is None else (f", p = {p_value:.3g}" if p_value > 0 else
                                             ", p < 1e-300 (below floating-point range)")
        text = (f"|t| = {abs(t):.3f} {sign} {critical:.3f} (critical at {level}, dof {dof:.0f}; {critical_inf:.3f} at "
                f"infinite dof){p_text}: " + (f"reject equal means; {direction}" if reject else
                                                "no significant difference"))
    return {"critical_inf": round(critical_inf, 3), "critical_exact": critical, "reject": bool(reject),
            "verdict": text}
