"""isoFLOP profiles (Chinchilla "Approach 2", Hoffmann et al. 2022, section 3.2).

1. Budgets C_k: every run's target at C_k is read off its checkpoints by linear interpolation of log y in log C
   between the two neighbouring checkpoints (`read_at_budgets`; a run that does not bracket C_k gives no point —
   never extrapolated). A run with a single checkpoint exactly at C_k counts (classic isoFLOP designs).
2. Per budget, a robust parabola log y = a (log N)^2 + b log N + c is fitted (iteratively reweighted least squares
   with Huber weights on the residuals, scale from the MAD). Its vertex is N*(C_k). A profile is rejected when it
   has fewer than `min_runs` runs, is not convex (a <= 0), its vertex lies outside the sampled N range, or its
   lowest measured point is the smallest or largest N (minimum at the grid edge: the true optimum may be outside).
3. N*(C) = G C^a and D*(C) = H C^b are fitted by least squares in log-log on the accepted budgets. D* is
   C / (cost N*) (so b = 1 - a; Chinchilla: C = 6 N D) unless a data column is given (`d_col`, e.g. samples seen:
   RayDer's C per sample is not 6 N): then the runs' data seen at each budget is interpolated in log-log over log N
   at the vertex. Bootstrap CIs: the points of every profile are resampled with replacement, every parabola and
   the power law refitted.

Known pitfall (tests/test_fitting_isoflop.py shows it): the parabola is only an approximation of the profile; when
the sampled N grid is off-centre around the optimum, and the offset changes with the budget (e.g. the same model
sizes for every budget, so small budgets sample mostly too-large models and large budgets too-small ones), the
vertices are biased by a budget-dependent amount and the fitted exponent is biased. Sample every budget on a grid
centred (in log N) on a prior guess of N*, wide enough that the minimum is interior, and compare with the
parametric fit (Approach 3, `fit_law`). Even on a centred grid the vertex is off by a constant factor (+3% for the
Chinchilla surface sampled over N*/8..8 N*): it cancels in the exponent and biases only the coefficient G.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd


def read_at_budgets(df: pd.DataFrame, budgets: Sequence[float], *, run_col: str = "run_id", n_col: str = "N",
                    c_col: str = "C", y_col: str = "y", d_col: str | None = None) -> pd.DataFrame:
    """Target of every run at every budget it brackets: columns run_id, N, budget, y (interpolated in log-log), and
    D (the data column `d_col`, interpolated the same way) when `d_col` is given."""
    missing = [c for c in (run_col, n_col, c_col, y_col, *([d_col] if d_col else [])) if c not in df.columns]
    if missing:
        raise ValueError(f"isoflop: data lacks columns {missing} (have {list(df.columns)})")
    vals = df[[n_col, c_col, y_col, *([d_col] if d_col else [])]].apply(pd.to_numeric, errors="coerce").to_numpy(
        dtype=float)
    bad = ~np.all(np.isfinite(vals) & (vals > 0), axis=1)
    if bad.any():
        raise ValueError(f"isoflop: {int(bad.sum())} row(s) have non-finite or non-positive {n_col}, {c_col} or "
                         f"{y_col}:\n{df[bad].head(5).to_string()}")
    budgets = np.asarray(budgets, dtype=float)
    rows = []
    for run, g in df.groupby(run_col, sort=True):
        g = g.sort_values(c_col)
        n = g[n_col].to_numpy(dtype=float)
        if np.ptp(n) > 1e-9 * n[0]:
            raise ValueError(f"isoflop: run {run!r} has several values of {n_col} ({sorted(set(n))[:4]})")
        lc = np.log(g[c_col].to_numpy(dtype=float))
        ly = np.log(g[y_col].to_numpy(dtype=float))
        ld = np.log(g[d_col].to_numpy(dtype=float)) if d_col else None
        lc, idx = np.unique(lc, return_index=True)  # duplicate compute (e.g. re-evaluations): keep the first
        ly = ly[idx]
        for b in budgets:
            lb = np.log(b)
            if lc[0] - 1e-12 <= lb <= lc[-1] + 1e-12:
                row = {"run_id": run, "N": float(n[0]), "budget": float(b), "y": float(np.exp(np.interp(lb, lc, ly)))}
                if d_col:
                    row["D"] = float(np.exp(np.interp(lb, lc, ld[idx])))
                rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "N", "budget", "y", *(["D"] if d_col else [])])


def _robust_parabola(x: np.ndarray, z: np.ndarray, iters: int = 20, k: float = 1.345) -> np.ndarray:
    """Huber-IRLS quadratic fits, batched: x, z (B, m) -> coefficients (B, 3) of a x^2 + b x + c."""
    X = np.stack([x * x, x, np.ones_like(x)], axis=-1)  # (B, m, 3)
    w = np.ones_like(z)
    coef = np.zeros(z.shape[:-1] + (3,))
    for _ in range(iters):
        Xw = X * w[..., None]
        A = np.einsum("bmi,bmj->bij", Xw, X) + 1e-12 * np.eye(3)
        rhs = np.einsum("bmi,bm->bi", Xw, z)
        coef = np.linalg.solve(A, rhs[..., None])[..., 0]
        r = z - np.einsum("bmi,bi->bm", X, coef)
        s = 1.4826 * np.median(np.abs(r - np.median(r, axis=-1, keepdims=True)), axis=-1, keepdims=True)
        s = np.maximum(s, 1e-9 + 1e-6 * np.abs(z).mean(axis=-1, keepdims=True))
        a = np.abs(r) / (k * s)
        w = np.where(a <= 1, 1.0, 1.0 / np.maximum(a, 1e-300))
    return coef


@dataclass
class IsoflopResult:
    """N*(C) = G C^a_N and D*(C) = H C^a_D fitted on the accepted isoFLOP profiles (D* = C / (cost N*), or the
    data column interpolated at N* when `d_col` was given: `d_source` says which)."""

    profiles: pd.DataFrame  # per budget: budget, n_runs, n_min, n_max, a, b, c, N_opt, y_opt, accepted, reason, D_opt
    points: pd.DataFrame  # run_id, N, budget, y: the values read off the checkpoints
    a_N: float
    G: float
    a_D: float
    H: float
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # a_N, a_D, G, H -> (low, high)
    cost: float = 6.0
    n_bootstrap: int = 0
    d_source: str = "C / (6 N*)"
    boot: np.ndarray | None = None  # (resamples, 4): slope_N, log G, slope_D, log H of every bootstrap refit

    def band(self, C, which: str = "N", ci: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise bootstrap band of N*(C) (which='N') or D*(C) ('D') at budgets C; None without bootstrap."""
        if self.boot is None:
            return None
        fits = self.boot[np.isfinite(self.boot[:, 0])]
        if not len(fits):
            return None
        j = 0 if which == "N" else 2
        logc = np.log(np.atleast_1d(np.asarray(C, dtype=float)))
        pred = fits[:, j, None] * logc[None] + fits[:, j + 1, None]
        lo, hi = np.percentile(pred, (100 * (1 - ci) / 2, 100 * (1 + ci) / 2), axis=0)
        return np.exp(lo), np.exp(hi)

    def N_opt(self, C) -> np.ndarray:
        """Compute-optimal N at budgets C (same units as the fitted budgets)."""
        return self.G * np.asarray(C, dtype=float) ** self.a_N

    def D_opt(self, C) -> np.ndarray:
        return self.H * np.asarray(C, dtype=float) ** self.a_D

    def summary(self) -> str:
        acc = self.profiles["accepted"]
        lines = [f"isoFLOP profiles (Chinchilla Approach 2): {int(acc.sum())} of {len(acc)} budgets accepted",
                 f"  N*(C) = {self.G:.4g} C^{self.a_N:.4f}" + (f"  a_N 95% CI [{self.ci['a_N'][0]:.4f}, "
                                                              f"{self.ci['a_N'][1]:.4f}]" if 'a_N' in self.ci else ""),
                 f"  D*(C) = {self.d_source} = {self.H:.4g} C^{self.a_D:.4f}" + (
                     f"  a_D 95% CI [{self.ci['a_D'][0]:.4f}, {self.ci['a_D'][1]:.4f}]" if 'a_D' in self.ci else ""),
                 f"  ({self.n_bootstrap} bootstrap resamples of the profile points)"]
        for r in self.profiles.itertuples():
            state = "ok" if r.accepted else f"rejected: {r.reason}"
            nopt = f"N* = {r.N_opt:.4g}" if np.isfinite(r.N_opt) else "N* = -"
            lines.append(f"  C = {r.budget:.4g}: {r.n_runs} runs, N in [{r.n_min:.3g}, {r.n_max:.3g}], {nopt}, {state}")
        return "\n".join(lines)

    def to_record(self) -> dict:
        """JSON-friendly summary (stored as a fit record with law 'isoflop')."""
        return {"a_N": self.a_N, "G": self.G, "a_D": self.a_D, "H": self.H, "cost": self.cost,
                "d_source": self.d_source,
                "ci": {k: list(v) for k, v in self.ci.items()}, "n_bootstrap": self.n_bootstrap,
                "profiles": self.profiles.drop(columns=["a", "b", "c"]).to_dict(orient="records")}


def _profile_rows(pts: pd.DataFrame, budgets: np.ndarray, min_runs: int) -> tuple[list[dict], list]:
    rows, data = [], []
    for b in budgets:
        g = pts[pts["budget"] == b]
        lx, lz = np.log(g["N"].to_numpy(dtype=float)), np.log(g["y"].to_numpy(dtype=float))
        row = {"budget": float(b), "n_runs": len(g), "n_min": float(np.exp(lx.min())) if len(g) else np.nan,
               "n_max": float(np.exp(lx.max())) if len(g) else np.nan, "a": np.nan, "b": np.nan, "c": np.nan,
               "N_opt": np.nan, "y_opt": np.nan, "accepted": False, "reason": ""}
        if len(np.unique(lx)) < max(min_runs, 3):
            row["reason"] = f"{len(np.unique(lx))} distinct N (< {max(min_runs, 3)})"
        rows.append(row)
        data.append((lx, lz))
    return rows, data


def _vertices(coef: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = coef[..., 0], coef[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = -b / (2 * a)
    ok = (a > 0) & (v >= lo) & (v <= hi)
    return v, ok


def isoflop(df: pd.DataFrame, budgets: Sequence[float] | None = None, *, n_budgets: int = 8, run_col: str = "run_id",
            n_col: str = "N", c_col: str = "C", y_col: str = "y", cost: float = 6.0, min_runs: int = 4,
            bootstrap: int = 1000, seed: int = 0, ci: float = 0.95, d_col: str | None = None) -> IsoflopResult:
    """isoFLOP analysis of checkpoint curves (see the module docstring).

    `df`: one row per checkpoint with columns run id, N (parameters), C (training compute) and y (lower-is-better
    target); optional `d_col` (data seen, e.g. samples) gives D* by interpolation instead of C / (cost N*).
    `budgets` default: the distinct C values when every run has one point (a classic isoFLOP design), else
    `n_budgets` log-spaced values between the 5th and 95th percentiles of C.
    """
    if budgets is None and run_col in df.columns and c_col in df.columns and df.groupby(run_col).size().max() == 1:
        budgets = pd.to_numeric(df[c_col], errors="coerce").dropna().unique()  # one point per run: classic design
    if budgets is None:
        c = pd.to_numeric(df[c_col], errors="coerce").to_numpy(dtype=float) if c_col in df.columns else np.array([])
        c = c[np.isfinite(c) & (c > 0)]
        if len(c) == 0:
            raise ValueError(f"isoflop: no positive values in column {c_col!r}")
        lo, hi = np.quantile(np.log(c), [0.05, 0.95])
        budgets = np.exp(np.linspace(lo, hi, n_budgets))
    budgets = np.asarray(sorted(set(float(b) for b in budgets)))
    pts = read_at_budgets(df, budgets, run_col=run_col, n_col=n_col, c_col=c_col, y_col=y_col, d_col=d_col)
    rows, data = _profile_rows(pts, budgets, min_runs)
    for row, (lx, lz) in zip(rows, data):
        if row["reason"]:
            continue
        coef = _robust_parabola(lx[None], lz[None])[0]
        row["a"], row["b"], row["c"] = coef
        v, ok = _vertices(coef, lx.min(), lx.max())
        edge = np.argmin(lz) in (np.argmin(lx), np.argmax(lx))
        if not coef[0] > 0:
            row["reason"] = "profile not convex"
        elif not ok:
            row["reason"] = "parabola minimum outside the sampled N range"
        elif edge:
            row["reason"] = "lowest point at the edge of the N grid"
        else:
            row["accepted"] = True
            row["N_opt"] = float(np.exp(v))
            row["y_opt"] = float(np.exp(coef[2] - coef[1] ** 2 / (4 * coef[0])))
    keep = [i for i, r in enumerate(rows) if r["accepted"]]
    if len(keep) < 2:
        prof = pd.DataFrame(rows)
        raise ValueError(f"isoflop: only {len(keep)} of {len(prof)} budgets gave an interior minimum; need 2 or more "
                         f"(reasons: {sorted(set(prof['reason']) - {''})}). Sample N more widely around the optimum "
                         "or choose other budgets.")
    lc = np.log([rows[i]["budget"] for i in keep])
    curves = []  # per accepted budget: (sorted log N, log D at those N) for interpolating D at the vertex
    for i in keep:
        g = pts[pts["budget"] == rows[i]["budget"]].sort_values("N")
        curves.append((np.log(g["N"].to_numpy(dtype=float)),
                       np.log(g["D"].to_numpy(dtype=float)) if d_col else None))

    def log_d(j: int, logn: np.ndarray) -> np.ndarray:
        """log D* at log N* = logn on accepted budget j."""
        if d_col:
            return np.interp(logn, *curves[j])
        return lc[j] - np.log(cost) - logn

    for j, i in enumerate(keep):
        rows[i]["D_opt"] = float(np.exp(log_d(j, np.log(rows[i]["N_opt"]))))
    prof = pd.DataFrame(rows)
    if "D_opt" not in prof.columns:
        prof["D_opt"] = np.nan
    ln = np.log([rows[i]["N_opt"] for i in keep])
    ld = np.log([rows[i]["D_opt"] for i in keep])
    a_N, logG = np.polyfit(lc, ln, 1)
    a_D, logH = np.polyfit(lc, ld, 1)
    res = IsoflopResult(profiles=prof, points=pts, a_N=float(a_N), G=float(np.exp(logG)), a_D=float(a_D),
                        H=float(np.exp(logH)), cost=cost, n_bootstrap=int(bootstrap),
                        d_source=f"{d_col} interpolated at N*" if d_col else f"C / ({cost:g} N*)")
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        V = np.full((bootstrap, len(keep)), np.nan)
        W = np.full((bootstrap, len(keep)), np.nan)
        for j, i in enumerate(keep):
            lx, lz = data[i]
            idx = rng.integers(0, len(lx), size=(bootstrap, len(lx)))
            coef = _robust_parabola(lx[idx], lz[idx])
            v, ok = _vertices(coef, lx.min(), lx.max())
            V[:, j] = np.where(ok, v, np.nan)
            W[:, j] = np.where(ok, log_d(j, np.where(ok, v, lx.mean())), np.nan)
        fits = np.full((bootstrap, 4), np.nan)  # slope_N, intercept_N, slope_D, intercept_D
        for bi in range(bootstrap):
            m = np.isfinite(V[bi])
            if m.sum() >= 2:
                fits[bi, :2] = np.polyfit(lc[m], V[bi, m], 1)
                fits[bi, 2:] = np.polyfit(lc[m], W[bi, m], 1)
        res.boot = fits
        ok = np.isfinite(fits[:, 0])
        q = (100 * (1 - ci) / 2, 100 * (1 + ci) / 2)
        if ok.any():
            pc = np.percentile(fits[ok], q, axis=0)  # (2, 4)
            res.ci = {"a_N": (float(pc[0, 0]), float(pc[1, 0])), "G": (float(np.exp(pc[0, 1])), float(np.exp(pc[1, 1]))),
                      "a_D": (float(pc[0, 2]), float(pc[1, 2])), "H": (float(np.exp(pc[0, 3])), float(np.exp(pc[1, 3])))}
    return res


def plot_isoflop(res: IsoflopResult, path: str, *, x_label: str = "N (parameters)", y_label: str = "target") -> None:
    """Report page figure: the profiles with their parabolas and minima (left) and N*(C) with the fit (right)."""
    import matplotlib  # optional plotting (rayder-fit --isoflop --plot, the report); Agg before pyplot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional plotting, after choosing the Agg backend

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("viridis")
    prof = res.profiles
    for i, r in enumerate(prof.itertuples()):
        col = cmap(i / max(len(prof) - 1, 1))
        g = res.points[res.points["budget"] == r.budget]
        ax1.scatter(g["N"], g["y"], color=col, s=14, marker="o" if r.accepted else "x")
        if np.isfinite(r.a):
            xs = np.linspace(np.log(r.n_min), np.log(r.n_max), 100)
            ax1.plot(np.exp(xs), np.exp(r.a * xs * xs + r.b * xs + r.c), color=col, lw=1,
                     ls="-" if r.accepted else ":", label=f"C={r.budget:.2g}")
        if r.accepted:
            ax1.scatter([r.N_opt], [r.y_opt], color=col, marker="*", s=90, edgecolor="k", zorder=5)
    ax1.set(xscale="log", yscale="log", xlabel=x_label, ylabel=y_label, title="isoFLOP profiles (x: rejected)")
    ax1.legend(fontsize=7)
    acc = prof[prof["accepted"]]
    ax2.scatter(acc["budget"], acc["N_opt"], color="k", label="profile minima")
    cs = np.geomspace(prof["budget"].min(), prof["budget"].max(), 50)
    ax2.plot(cs, res.N_opt(cs), color="C3", label=f"N* = {res.G:.3g} C^{res.a_N:.3f}")
    ax2.set(xscale="log", yscale="log", xlabel="C (compute)", ylabel="N*", title="compute-optimal N")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
