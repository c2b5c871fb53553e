"""Page 8: held-out runs against the law fitted on the grid alone (only when the store has held-out runs)."""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np
from matplotlib.figure import Figure

from reports.common import Study, message_page, new_page, sci

def holdout_page(study: Study) -> Figure:
    """Measured target (e.g. MSE) of every evaluated checkpoint of each held-out run vs its compute, with the
    law's prediction, its bootstrap band and the Student-t lack-of-fit interval (stored by the demo /
    `fitting.holdout_runs`)."""
    title = "Held-out run vs the law fitted on the grid alone"
    if study.holdouts.empty:
        return message_page(title, "The store has held-out runs but no validation of them yet: run "
                            "`python -m sweeps.demo` (it fits the grid, then predicts the held-out runs).")
    latest = study.holdouts[study.holdouts["created"] == study.holdouts["created"].max()]
    fig = new_page(title, f"law {latest['law'].iloc[0]} on {latest['bench'].iloc[0]} ({latest['metric'].iloc[0]} "
                   f"fitted as {latest['y_col'].iloc[0]}); fitted on C <= {sci(float(latest['train_max'].iloc[0]))}"
                   " GFLOP; 95% intervals")
    ax = fig.add_axes([0.08, 0.12, 0.6, 0.72])
    lines = []
    for i, (_, rec) in enumerate(latest.iterrows()):
        d = json.loads(rec["detail"])
        order = np.argsort(d["C"])
        C = np.asarray(d["C"], dtype=float)[order]
        get = lambda k: np.asarray(d[k], dtype=float)[order]  # noqa: E731
        colour = f"C{i}"
        ax.fill_between(C, get("lo"), get("hi"), color=colour, alpha=0.12, label="lack-of-fit interval (t)")
        if np.isfinite(get("band_lo")).any():
            ax.fill_between(C, get("band_lo"), get("band_hi"), color=colour, alpha=0.3, label="bootstrap band")
        ax.plot(C, get("predicted"), "-", color=colour, label="law prediction")
        ax.plot(C, get("measured"), "o", color=colour, label="measured checkpoints")
        ax.axvline(float(rec["train_max"]), color="grey", ls=":", lw=1)
        rel = get("predicted")[-1] / get("measured")[-1] - 1
        lines.append(f"{d['run_id'][-1] if isinstance(d.get('run_id'), list) else rec['sweep']}:\n"
                     f"  final step: measured {get('measured')[-1]:.4g},\n  predicted {get('predicted')[-1]:.4g} "
                     f"({rel:+.1%})\n  inside the interval: {'yes' if rec['coverage'] >= 1 else 'no'}\n"
                     f"  max |error| {float(rec['max_abs_rel_err']):.1%}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (GFLOP)")
    ax.set_ylabel(str(latest["y_col"].iloc[0]))
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="upper right")
    ax.text(1.04, 0.98, "\n\n".join(lines) + "\n\n(dotted: largest C of the grid's frontier)",
            transform=ax.transAxes, va="top", fontsize=8, family="monospace")
    return fig


def figures(study: Study, fits: dict) -> Iterable[tuple[str, Figure]]:
    if study.has_holdout_runs:
        yield "08_holdout", holdout_page(study)


def page_count(n_nvs_benches: int, n_probe_benches: int, n_runs: int, holdout: bool) -> int:
    return int(holdout)
