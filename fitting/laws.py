"""Registry of scaling laws (paper section B.2.1, Eqs. B.8-B.16) with analytic Jacobians.

Every law maps one or two positive inputs (by default C = training compute in GFLOP and D = number of training
videos, but any columns can play these roles, e.g. N = parameters and D = tokens) to a positive, lower-is-better
target L. A law knows

- its parameter names, box bounds (natural units) and which parameters are positive constants fitted in log space;
- `evaluate(P, X, jac)`: predictions and, when asked, dL/dparam for every parameter (used by L-BFGS-B);
- a grid of starting values for its *nonlinear* parameters (exponents, offsets) and a `basis` that turns one grid
  point into a linear least-squares problem for the remaining constants (variable projection), so a multi-start
  fit only has to search exponents;
- a formula template that prints the fitted law like the paper's Eq. 4.

Offsets (C0, D0) appear only in the `*_offset` variants; the base laws have them at 0 (so `additive` is
Chinchilla's E + A/N^alpha + B/D^beta when x = [N, D]).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Params = dict[str, np.ndarray]
Inputs = list[np.ndarray]

# Bounds shared by all laws (natural units). Positive constants are fitted as log(value), so their bounds are wide.
_CONST = (1e-30, 1e30)
_EXP = (0.0, 5.0)
_GAMMA = (0.05, 20.0)
_OFFSET = (1e-30, 1e30)


@dataclass(frozen=True)
class Law:
    """One scaling law. See the module docstring for the meaning of each field."""

    name: str
    equation: str  # paper equation number, e.g. "B.9"
    n_inputs: int  # 1 (L(C)) or 2 (L(C, D))
    param_names: tuple[str, ...]
    log_params: frozenset[str]  # positive constants parametrised as log(value)
    template: str  # formula with {param} and {x0}/{x1} placeholders
    evaluate: Callable[[Params, Inputs, bool], tuple[np.ndarray, Params]]
    basis: Callable[[Params, Inputs], tuple[list[np.ndarray], Callable[[Params, list[np.ndarray]], Params]]]
    grid: Callable[[Inputs], Params]  # starting values of the nonlinear parameters (one entry per grid point)
    # How constants depend on the units of the inputs: constant -> [(input index, exponent name)], i.e. the
    # constant multiplies prod_j x_j^-exponent_j; and offset -> input index. Used to fit on inputs divided by a
    # reference value (well conditioned) and convert the parameters back.
    powers: dict[str, list[tuple[int, str]]]
    offsets: dict[str, int]
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Input j -> input k whose reference value it must share when inputs are normalised (data_constrained: unique
    # data U is measured in the units of data seen D, only their ratio enters the repetition count R).
    ref_of: dict[int, int] = field(default_factory=dict)
    # Constrained laws (see `constrain`): the registry law they derive from, fixed values (fit space: inputs
    # divided by their references) and ties (param -> the free param it equals), as sorted tuples (picklable spec).
    base: str | None = None
    fixed: tuple[tuple[str, float], ...] = ()
    tied: tuple[tuple[str, str], ...] = ()
    # Subtracted from the target before the variable-projection solve of the linear constants (a fixed L_inf).
    basis_shift: float = 0.0

    @property
    def spec(self) -> tuple[str, tuple[tuple[str, float], ...], tuple[tuple[str, str], ...]]:
        """(registry name, fixed, tied): enough to rebuild this law in another process (`law_from_spec`)."""
        return (self.base or self.name, self.fixed, self.tied)

    def denormalise(self, P: dict, refs: list[float]) -> dict:
        """Parameters fitted on inputs x_j / refs[j] -> parameters for the raw inputs (arrays broadcast)."""
        out = dict(P)
        for const, factors in self.powers.items():
            for j, exp_name in factors:
                out[const] = out[const] * refs[j] ** P[exp_name]
        for off, j in self.offsets.items():
            out[off] = P[off] * refs[j]
        return out

    def predict(self, params: dict[str, float] | Params, X: Inputs) -> np.ndarray:
        """Evaluate the law at inputs X (list of 1-D arrays, one per input column)."""
        P = {k: np.asarray(params[k], dtype=float) for k in self.param_names}
        return self.evaluate(P, [np.asarray(x, dtype=float) for x in X], False)[0]


# ---------------------------------------------------------------------------------------------------- helpers
def _logx(P: Params, X: Inputs, i: int, offset: str) -> tuple[np.ndarray, np.ndarray]:
    """log(x_i + offset) and x_i + offset (offset 0 when the law has none)."""
    shifted = X[i] + P[offset] if offset in P else X[i]
    return np.log(shifted), shifted


def _product(*grids: tuple[str, np.ndarray]) -> Params:
    names = [g[0] for g in grids]
    combos = np.array(list(itertools.product(*[g[1] for g in grids])), dtype=float)
    return {n: combos[:, j] for j, n in enumerate(names)}


_EXPONENTS = np.array([0.1, 0.25, 0.45, 0.7, 1.0, 1.5])
_EXPONENTS_SMALL = np.array([0.15, 0.4, 0.8, 1.4])
_OFFSET_FRACTIONS = np.array([1e-6, 0.1, 1.0])  # of the smallest input value


def _offset_grid(X: Inputs, names: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    out = []
    for i, name in enumerate(names):
        if name:
            out.append((name, _OFFSET_FRACTIONS * float(np.min(X[i]))))
    return out


def _absorb_linear(names: tuple[str, ...]):
    def absorb(P: Params, coef: list[np.ndarray]) -> Params:
        out = dict(P)
        for n, c in zip(names, coef):
            out[n] = c
        return out
    return absorb


# ---------------------------------------------------------------------------------------------------- B.8
def _single(P: Params, X: Inputs, jac: bool) -> tuple[np.ndarray, Params]:
    lc, cs = _logx(P, X, 0, "C0")
    t = P["A"] * np.exp(-P["alpha"] * lc)
    y = P["L_inf"] + t
    if not jac:
        return y, {}
    g = {"L_inf": np.ones_like(y), "A": t / P["A"], "alpha": -t * lc, "C0": -P["alpha"] * t / cs}
    return y, g


def _single_basis(P: Params, X: Inputs):
    lc, _ = _logx(P, X, 0, "C0")
    return [np.ones_like(lc * P["alpha"]), np.exp(-P["alpha"] * lc)], _absorb_linear(("L_inf", "A"))


# ---------------------------------------------------------------------------------------------------- B.9
def _kaplan(P: Params, X: Inputs, jac: bool) -> tuple[np.ndarray, Params]:
    lc, cs = _logx(P, X, 0, "C0")
    ld, ds = _logx(P, X, 1, "D0")
    tc = P["A"] * np.exp(-P["alpha"] * lc)
    td = P["B"] * np.exp(-P["beta"] * ld)
    s = tc + td
    sg = s ** P["gamma"]
    y = P["L_inf"] + sg
    if not jac:
        return y, {}
    g1 = P["gamma"] * sg / s
    g = {"L_inf": np.ones_like(y), "A": g1 * tc / P["A"], "alpha": -g1 * tc * lc, "B": g1 * td / P["B"],
         "beta": -g1 * td * ld, "gamma": sg * np.log(s), "C0": -g1 * P["alpha"] * tc / cs,
         "D0": -g1 * P["beta"] * td / ds}
    return y, g


def _kaplan_basis(P: Params, X: Inputs):
    # With A = 1 and B = rho the law is L_inf + K * (C^-alpha + rho D^-beta)^gamma, linear in (L_inf, K);
    # K = A^gamma then rescales A and B together.
    lc, _ = _logx(P, X, 0, "C0")
    ld, _ = _logx(P, X, 1, "D0")
    phi = (np.exp(-P["alpha"] * lc) + P["B"] * np.exp(-P["beta"] * ld)) ** P["gamma"]

    def absorb(P: Params, coef: list[np.ndarray]) -> Params:
        out = dict(P)
        scale = coef[1] ** (1.0 / P["gamma"])
        out["L_inf"], out["A"], out["B"] = coef[0], scale, P["B"] * scale
        return out
    return [np.ones_like(phi), phi], absorb


def _kaplan_grid_factory(offsets: bool):
    def grid(X: Inputs) -> Params:
        # "share": ratio of the D term to the C term at the median input, so the grid is scale free.
        g = _product(("alpha", _EXPONENTS_SMALL), ("beta", _EXPONENTS_SMALL), ("gamma", np.array([0.5, 1.0, 2.0, 3.5])),
                     ("share", np.array([0.1, 1.0, 10.0])), *(_offset_grid(X, ("C0", "D0")) if offsets else []))
        log_mc, log_md = np.log(np.median(X[0])), np.log(np.median(X[1]))
        g["B"] = g.pop("share") * np.exp(-g["alpha"] * log_mc + g["beta"] * log_md)
        return g
    return grid


# ---------------------------------------------------------------------------------------------------- B.13
def _additive(P: Params, X: Inputs, jac: bool) -> tuple[np.ndarray, Params]:
    lc, cs = _logx(P, X, 0, "C0")
    ld, ds = _logx(P, X, 1, "D0")
    tc = P["A"] * np.exp(-P["alpha"] * lc)
    td = P["B"] * np.exp(-P["beta"] * ld)
    y = P["L_inf"] + tc + td
    if not jac:
        return y, {}
    g = {"L_inf": np.ones_like(y), "A": tc / P["A"], "alpha": -tc * lc, "B": td / P["B"], "beta": -td * ld,
         "C0": -P["alpha"] * tc / cs, "D0": -P["beta"] * td / ds}
    return y, g


def _additive_basis(P: Params, X: Inputs):
    lc, _ = _logx(P, X, 0, "C0")
    ld, _ = _logx(P, X, 1, "D0")
    pc, pd = np.exp(-P["alpha"] * lc), np.exp(-P["beta"] * ld)
    return [np.ones_like(pc * pd), pc, pd], _absorb_linear(("L_inf", "A", "B"))


# ---------------------------------------------------------------------------------------------------- B.14
def _cross(P: Params, X: Inputs, jac: bool) -> tuple[np.ndarray, Params]:
    lc, cs = _logx(P, X, 0, "C0")
    ld, ds = _logx(P, X, 1, "D0")
    tc = P["A"] * np.exp(-P["alpha"] * lc)
    td = P["B"] * np.exp(-P["beta"] * ld)
    te = P["E"] * np.exp(-P["alpha2"] * lc - P["beta2"] * ld)
    y = P["L_inf"] + tc + td + te
    if not jac:
        return y, {}
    g = {"L_inf": np.ones_like(y), "A": tc / P["A"], "alpha": -tc * lc, "B": td / P["B"], "beta": -td * ld,
         "E": te / P["E"], "alpha2": -te * lc, "beta2": -te * ld,
         "C0": -(P["alpha"] * tc + P["alpha2"] * te) / cs, "D0": -(P["beta"] * td + P["beta2"] * te) / ds}
    return y, g


def _cross_basis(P: Params, X: Inputs):
    lc, _ = _logx(P, X, 0, "C0")
    ld, _ = _logx(P, X, 1, "D0")
    pc, pd = np.exp(-P["alpha"] * lc), np.exp(-P["beta"] * ld)
    pe = np.exp(-P["alpha2"] * lc - P["beta2"] * ld)
    return [np.ones_like(pe), pc, pd, pe], _absorb_linear(("L_inf", "A", "B", "E"))


# ---------------------------------------------------------------------------------------------------- B.15
def _modulated(P: Params, X: Inputs, jac: bool) -> tuple[np.ndarray, Params]:
    lc, cs = _logx(P, X, 0, "C0")
    ld, ds = _logx(P, X, 1, "D0")
    td = P["B"] * np.exp(-P["beta"] * ld)
    tm = P["A"] * np.exp(-P["alpha"] * lc - P["delta"] * ld)
    y = P["L_inf"] + td + tm
    if not jac:
        return y, {}
    g = {"L_inf": np.ones_like(y), "B": td / P["B"], "beta": -td * ld, "A": tm / P["A"], "alpha": -tm * lc,
         "delta": -tm * ld, "C0": -P["alpha"] * tm / cs, "D0": -(P["beta"] * td + P["delta"] * tm) / ds}
    return y, g


def _modulated_basis(P: Params, X: Inputs):
    lc, _ = _logx(P, X, 0, "C0")
    ld, _ = _logx(P, X, 1, "D0")
    pd, pm = np.exp(-P["beta"] * ld), np.exp(-P["alpha"] * lc - P["delta"] * ld)
    return [np.ones_like(pm), pd, pm], _absorb_linear(("L_inf", "B", "A"))


# ---------------------------------------------------------------------------------------------------- B.16
def _gated(P: Params, X: Inputs, jac: bool) -> tuple[np.ndarray, Params]:
    lc, ld = np.log(X[0]), np.log(X[1])
    dd1 = X[1] + P["D1"]
    lgate = ld - np.log(dd1)
    td = P["B"] * np.exp(-P["beta"] * ld)
    tg = P["A"] * np.exp(-P["alpha"] * lc + P["kappa"] * lgate)
    y = P["L_inf"] + td + tg
    if not jac:
        return y, {}
    g = {"L_inf": np.ones_like(y), "B": td / P["B"], "beta": -td * ld, "A": tg / P["A"], "alpha": -tg * lc,
         "kappa": tg * lgate, "D1": -P["kappa"] * tg / dd1}
    return y, g


def _gated_basis(P: Params, X: Inputs):
    lc, ld = np.log(X[0]), np.log(X[1])
    pd = np.exp(-P["beta"] * ld)
    pg = np.exp(-P["alpha"] * lc + P["kappa"] * (ld - np.log(X[1] + P["D1"])))
    return [np.ones_like(pg), pd, pg], _absorb_linear(("L_inf", "B", "A"))


def _gated_grid(X: Inputs) -> Params:
    return _product(("beta", _EXPONENTS_SMALL), ("alpha", _EXPONENTS_SMALL), ("kappa", np.array([0.5, 1.0, 2.0])),
                    ("D1", np.array([0.1, 1.0, 10.0]) * float(np.median(X[1]))))


# ---------------------------------------------------------------------------------------------------- registry
def _make(name: str, equation: str, n_inputs: int, names: tuple[str, ...], powers: dict, template: str,
          evaluate, basis, grid) -> Law:
    const = {"L_inf", "A", "B", "E"}
    offsets = {"C0", "D0", "D1"}
    bounds = {}
    for n in names:
        bounds[n] = _CONST if n in const else _OFFSET if n in offsets else _GAMMA if n == "gamma" else _EXP
    return Law(name=name, equation=equation, n_inputs=n_inputs, param_names=names,
               log_params=frozenset(n for n in names if n in const | offsets), template=template,
               evaluate=evaluate, basis=basis, grid=grid, powers=powers,
               offsets={o: j for o, j in (("C0", 0), ("D0", 1), ("D1", 1)) if o in names}, bounds=bounds)


def _grid(exps: list[tuple[str, np.ndarray]], offsets: tuple[str, ...] = ()):
    return lambda X: _product(*exps, *_offset_grid(X, offsets))


def _power_laws(offset: bool) -> dict[str, Law]:
    """The laws B.8, B.9, B.13, B.14 and B.15 in C and D, or with `offset` in (C + C0) and (D + D0) (names
    suffixed "_offset", two more free parameters)."""
    suffix = "_offset" if offset else ""
    c = "({x0} + {C0})" if offset else "{x0}"   # the compute term of a template
    d = "({x1} + {D0})" if offset else "{x1}"   # the data term
    grid_offsets = ("C0", "D0") if offset else ("", "")
    extra = ("C0", "D0") if offset else ()
    powers_ab = {"A": [(0, "alpha")], "B": [(1, "beta")]}
    laws = {}
    laws["single" + suffix] = _make(
        "single" + suffix, "B.8", 1, ("L_inf", "A", "alpha") + (("C0",) if offset else ()), {"A": [(0, "alpha")]},
        "{L_inf} + {A} " + c + "^-{alpha}", _single, _single_basis,
        _grid([("alpha", np.linspace(0.05, 2.0, 14))], ("C0",) if offset else ()))
    laws["kaplan" + suffix] = _make(
        "kaplan" + suffix, "B.9", 2, ("L_inf", "A", "alpha", "B", "beta", "gamma") + extra, powers_ab,
        "{L_inf} + ({A} " + c + "^-{alpha} + {B} " + d + "^-{beta})^{gamma}", _kaplan, _kaplan_basis,
        _kaplan_grid_factory(offset))
    laws["additive" + suffix] = _make(
        "additive" + suffix, "B.13", 2, ("L_inf", "A", "alpha", "B", "beta") + extra, powers_ab,
        "{L_inf} + {A} " + c + "^-{alpha} + {B} " + d + "^-{beta}", _additive, _additive_basis,
        _grid([("alpha", _EXPONENTS), ("beta", _EXPONENTS)], grid_offsets))
    laws["cross" + suffix] = _make(
        "cross" + suffix, "B.14", 2, ("L_inf", "A", "alpha", "B", "beta", "E", "alpha2", "beta2") + extra,
        {**powers_ab, "E": [(0, "alpha2"), (1, "beta2")]},
        "{L_inf} + {A} " + c + "^-{alpha} + {B} " + d + "^-{beta} + {E} " + c + "^-{alpha2} " + d + "^-{beta2}",
        _cross, _cross_basis,
        _grid([("alpha", _EXPONENTS_SMALL), ("beta", _EXPONENTS_SMALL), ("alpha2", _EXPONENTS_SMALL),
               ("beta2", _EXPONENTS_SMALL)], grid_offsets))
    laws["modulated" + suffix] = _make(
        "modulated" + suffix, "B.15", 2, ("L_inf", "B", "beta", "A", "alpha", "delta") + extra,
        {"B": [(1, "beta")], "A": [(0, "alpha"), (1, "delta")]},
        "{L_inf} + {B} " + d + "^-{beta} + {A} " + c + "^-{alpha} " + d + "^-{delta}", _modulated,
        _modulated_basis,
        _grid([("beta", _EXPONENTS_SMALL), ("alpha", _EXPONENTS_SMALL), ("delta", np.array([0.0, 0.1, 0.3, 0.6]))],
              grid_offsets))
    return laws


LAWS: dict[str, Law] = {**_power_laws(offset=False), **_power_laws(offset=True)}
LAWS["gated"] = _make(
    "gated", "B.16", 2, ("L_inf", "B", "beta", "A", "alpha", "kappa", "D1"), {"B": [(1, "beta")], "A": [(0, "alpha")]},
    "{L_inf} + {B} {x1}^-{beta} + {A} {x0}^-{alpha} ({x1} / ({x1} + {D1}))^{kappa}", _gated, _gated_basis,
    _gated_grid)



# ---------------------------------------------------------------------------------------------------- data-constrained
def _effective_data(P: Params, X: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """Muennighoff et al. (2023) effective data D' and dD'/dR_star from data seen D = X[1] and unique data U = X[2].

    U_D = min(D, U) (a run that has not finished one epoch has seen only unique data), R = D / U_D - 1 repetitions
    beyond the first epoch, D' = U_D + U_D R* (1 - exp(-R / R*)): repeated data is worth less and less, at most
    R* more epochs' worth.
    """
    ud = np.minimum(X[1], X[2])
    R = X[1] / ud - 1.0
    rs = P["R_star"]
    e = np.exp(-R / rs)
    dp = ud * (1.0 + rs * (1.0 - e))
    return dp, ud * ((1.0 - e) - (R / rs) * e)


def _data_constrained(P: Params, X: Inputs, jac: bool) -> tuple[np.ndarray, Params]:
    lc = np.log(X[0])
    dp, ddp = _effective_data(P, X)
    ld = np.log(dp)
    tc = P["A"] * np.exp(-P["alpha"] * lc)
    td = P["B"] * np.exp(-P["beta"] * ld)
    y = P["L_inf"] + tc + td
    if not jac:
        return y, {}
    g = {"L_inf": np.ones_like(y), "A": tc / P["A"], "alpha": -tc * lc, "B": td / P["B"], "beta": -td * ld,
         "R_star": -P["beta"] * td / dp * ddp}
    return y, g


def _data_constrained_basis(P: Params, X: Inputs):
    dp, _ = _effective_data(P, X)
    pc, pd = np.exp(-P["alpha"] * np.log(X[0])), np.exp(-P["beta"] * np.log(dp))
    return [np.ones_like(pc * pd), pc, pd], _absorb_linear(("L_inf", "A", "B"))


LAWS["data_constrained"] = Law(
    name="data_constrained", equation="5 of Muennighoff et al. 2023", n_inputs=3,
    param_names=("L_inf", "A", "alpha", "B", "beta", "R_star"),
    log_params=frozenset({"L_inf", "A", "B", "R_star"}),
    template="{L_inf} + {A} {x0}^-{alpha} + {B} D'^-{beta}, D' = U_D (1 + {R_star} (1 - exp(-R / {R_star}))), "
             "U_D = min(D, U), R = D / U_D - 1",
    evaluate=_data_constrained, basis=_data_constrained_basis,
    grid=_grid([("alpha", _EXPONENTS), ("beta", _EXPONENTS), ("R_star", np.array([1.0, 4.0, 15.0, 60.0]))]),
    powers={"A": [(0, "alpha")], "B": [(1, "beta")]}, offsets={},
    bounds={"L_inf": _CONST, "A": _CONST, "alpha": _EXP, "B": _CONST, "beta": _EXP, "R_star": (1e-3, 1e6)},
    ref_of={2: 1})

def _effective_params(P: Params, X: Inputs) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Muennighoff et al. (2023) effective parameters N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)) with N = X[0],
    U_N = min(N, N_opt(U_D)) the compute-optimal size for the unique data U_D = min(D, U) under the base law
    (N_opt(D) = (alpha A / (beta B))^(1/alpha) D^(beta/alpha), Chinchilla's allocation: the cost per N*D cancels)
    and R_N = N / U_N - 1 excess parameters. Returns N' and dN'/dparam for A, alpha, B, beta, R_N_star."""
    ud = np.minimum(X[1], X[2])
    al, be = P["alpha"], P["beta"]
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.log(al) + np.log(P["A"]) - np.log(be) - np.log(P["B"])
        lnopt = (k + be * np.log(ud)) / al
        nopt = np.exp(lnopt)
    capped = nopt < X[0]
    un = np.where(capped, nopt, X[0])
    R = X[0] / un - 1.0
    rs = P["R_N_star"]
    e = np.exp(-R / rs)
    npr = un * (1.0 + rs * (1.0 - e))
    d_un = np.where(capped, un * (1.0 + rs * (1.0 - e) - e * (R + 1.0)), 0.0)  # dN'/dlog U_N
    with np.errstate(all="ignore"):  # alpha or beta at their bound 0: N_opt is undefined, U_N = N (no term)
        grads = {"A": d_un / (al * P["A"]), "B": -d_un / (al * P["B"]), "alpha": d_un * (1.0 / al ** 2 - lnopt / al),
                 "beta": d_un * (np.log(ud) - 1.0 / be) / al}
    grads = {k: np.where(capped, v, 0.0) for k, v in grads.items()}
    grads["R_N_star"] = un * ((1.0 - e) - (R / rs) * e)
    return npr, grads


def _data_constrained_rn(P: Params, X: Inputs, jac: bool) -> tuple[np.ndarray, Params]:
    npr, dn = _effective_params(P, X)
    dp, ddp = _effective_data(P, X)
    ln, ld = np.log(npr), np.log(dp)
    tc = P["A"] * np.exp(-P["alpha"] * ln)
    td = P["B"] * np.exp(-P["beta"] * ld)
    y = P["L_inf"] + tc + td
    if not jac:
        return y, {}
    dtc = -P["alpha"] * tc / npr  # dT_N / dN'
    g = {"L_inf": np.ones_like(y), "A": tc / P["A"] + dtc * dn["A"], "alpha": -tc * ln + dtc * dn["alpha"],
         "B": td / P["B"] + dtc * dn["B"], "beta": -td * ld + dtc * dn["beta"],
         "R_star": -P["beta"] * td / dp * ddp, "R_N_star": dtc * dn["R_N_star"]}
    return y, g


def _data_constrained_rn_basis(P: Params, X: Inputs):
    # start values: excess parameters ignored (U_N needs A and B, which the linear solve is looking for)
    dp, _ = _effective_data(P, X)
    pc, pd = np.exp(-P["alpha"] * np.log(X[0])), np.exp(-P["beta"] * np.log(dp))
    return [np.ones_like(pc * pd), pc, pd], _absorb_linear(("L_inf", "A", "B"))


LAWS["data_constrained_rn"] = Law(
    name="data_constrained_rn", equation="5 of Muennighoff et al. 2023, with R_N*", n_inputs=3,
    param_names=("L_inf", "A", "alpha", "B", "beta", "R_star", "R_N_star"),
    log_params=frozenset({"L_inf", "A", "B", "R_star", "R_N_star"}),
    template="{L_inf} + {A} N'^-{alpha} + {B} D'^-{beta}, D' = U_D (1 + {R_star} (1 - exp(-R_D / {R_star}))), "
             "N' = U_N (1 + {R_N_star} (1 - exp(-R_N / {R_N_star}))), U_N = min({x0}, N_opt(U_D))",
    evaluate=_data_constrained_rn, basis=_data_constrained_rn_basis,
    grid=_grid([("alpha", _EXPONENTS), ("beta", _EXPONENTS), ("R_star", np.array([1.0, 4.0, 15.0, 60.0])),
                ("R_N_star", np.array([1.0, 5.0, 25.0]))]),
    powers={"A": [(0, "alpha")], "B": [(1, "beta")]}, offsets={},
    bounds={"L_inf": _CONST, "A": _CONST, "alpha": _EXP, "B": _CONST, "beta": _EXP, "R_star": (1e-3, 1e6),
            "R_N_star": (1e-3, 1e6)},
    ref_of={2: 1})


DEFAULT_LAW = "kaplan"


def get_law(name: str) -> Law:
    """Look up a law by name with a clear error listing the registry."""
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}; choose one of {sorted(LAWS)}") from None


def _kind(law: Law, name: str) -> str:
    return "offset" if name in law.offsets else "constant" if name in law.log_params else "exponent"


def constrain(law: Law | str, fix: dict[str, float] | None = None, tie: dict[str, str] | None = None) -> Law:
    """`law` with parameters fixed (`fix={"L_inf": 0.0}`) and/or tied (`tie={"beta": "alpha"}`: beta := alpha).

    The result is a Law over the remaining free parameters: its `evaluate` expands them to the full set (a tied
    parameter's gradient is added to the one it is tied to), its grid and variable-projection basis respect the
    constraints (a fixed L_inf is subtracted from the target before the linear solve; other fixed or tied linear
    constants are set after it). Values in `fix` are in the units the law is evaluated in (fit_law converts). Ties
    must join parameters of one kind (exponent-exponent, constant-constant, offset-offset). No constraints: `law`.
    """
    law = get_law(law) if isinstance(law, str) else law
    if law.base is not None:
        raise ValueError(f"law {law.name!r} is already constrained; constrain its registry law {law.base!r} once")
    fix = {str(k): float(v) for k, v in (fix or {}).items()}
    tie = {str(k): str(v) for k, v in (tie or {}).items()}
    if not fix and not tie:
        return law
    names = set(law.param_names)
    for what, keys in (("fix", list(fix)), ("tie", list(tie) + list(tie.values()))):
        unknown = [k for k in keys if k not in names]
        if unknown:
            raise ValueError(f"{what}: law {law.name!r} has no parameter(s) {unknown}; its parameters are "
                             f"{list(law.param_names)}")
    both = set(fix) & set(tie)
    if both:
        raise ValueError(f"parameter(s) {sorted(both)} are both fixed and tied; give one constraint each")
    for n, t in tie.items():
        if t in fix or t in tie or t == n:
            raise ValueError(f"tie {n}={t}: {t} must be a free parameter (not fixed, tied or {n} itself)")
        if _kind(law, n) != _kind(law, t):
            raise ValueError(f"tie {n}={t}: a {_kind(law, n)} cannot be tied to a {_kind(law, t)}")
    for n, v in fix.items():
        lo, hi = law.bounds[n]
        if n in law.log_params and not (v > 0 or (n == "L_inf" and v == 0)):
            raise ValueError(f"fix {n}={v:g}: {n} is a positive constant of law {law.name!r}; use a value > 0 "
                             "(L_inf=0 is allowed: the law is then a pure power law)")
        if n not in law.log_params and not lo <= v <= hi:
            raise ValueError(f"fix {n}={v:g}: outside the bounds [{lo:g}, {hi:g}] of law {law.name!r}")
    free = tuple(n for n in law.param_names if n not in fix and n not in tie)
    if not free:
        raise ValueError(f"law {law.name!r}: every parameter is fixed or tied; nothing to fit")

    def expand(P: Params) -> Params:
        full = {n: P[n] for n in free}
        for n, v in fix.items():
            full[n] = np.float64(v)
        for n, t in tie.items():
            full[n] = full[t]
        return full

    def evaluate(P: Params, X: Inputs, jac: bool) -> tuple[np.ndarray, Params]:
        y, g = law.evaluate(expand(P), X, jac)
        if not jac:
            return y, {}
        out = {n: g[n] for n in free}
        for n, t in tie.items():
            out[t] = out[t] + g[n]
        return y, out

    def grid(X: Inputs) -> Params:
        G = dict(law.grid(X))
        for n, v in fix.items():
            if n in G:
                G[n] = np.full_like(np.asarray(G[n], dtype=float), v)
        for n, t in tie.items():
            if n in G and t in G:
                G[n] = np.array(G[t], dtype=float, copy=True)
        keys = list(G)
        rows = np.unique(np.stack([np.asarray(G[k], dtype=float) for k in keys], axis=1), axis=0)
        return {k: rows[:, i] for i, k in enumerate(keys)}

    shift = fix.get("L_inf", 0.0)

    def basis(G: Params, X: Inputs):
        phis, absorb = law.basis(G, X)
        drop = "L_inf" in fix  # every registry basis has the constant column of L_inf first

        def absorb2(P: Params, coef: list[np.ndarray]) -> Params:
            if drop:
                coef = [np.full_like(np.asarray(coef[0], dtype=float), shift)] + list(coef)
            out = dict(absorb(P, coef))
            for n, v in fix.items():
                out[n] = np.full_like(np.asarray(out.get(n, coef[0]), dtype=float), v)
            for n, t in tie.items():
                out[n] = out[t]
            return out
        return (phis[1:] if drop else phis), absorb2

    label = ",".join([f"{n}={v:g}" for n, v in sorted(fix.items())] + [f"{n}={t}" for n, t in sorted(tie.items())])
    return Law(name=f"{law.name}[{label}]", equation=law.equation, n_inputs=law.n_inputs, param_names=free,
               log_params=frozenset(n for n in law.log_params if n in free), template=law.template,
               evaluate=evaluate, basis=basis, grid=grid, powers=law.powers, offsets=law.offsets,
               bounds={n: law.bounds[n] for n in free}, ref_of=law.ref_of, base=law.name,
               fixed=tuple(sorted(fix.items())), tied=tuple(sorted(tie.items())), basis_shift=shift)


def expand_params(law: Law, P: dict) -> dict:
    """Free parameters of a (possibly constrained) law -> every parameter of its registry law (arrays broadcast)."""
    full = dict(P)
    for n, v in law.fixed:
        full[n] = np.broadcast_to(np.float64(v), np.shape(next(iter(P.values())))) if P else np.float64(v)
    for n, t in law.tied:
        full[n] = P[t]
    return full


def law_from_spec(spec: tuple) -> Law:
    """Inverse of `Law.spec`: the registry law with the same constraints."""
    name, fixed, tied = spec
    return constrain(get_law(name), dict(fixed), dict(tied))
