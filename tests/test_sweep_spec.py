"""Grid files: validation errors name the file and key; expansion gives one TrainConfig per grid point."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from rayder_core.models.rayder.config import PRESETS
from rayder_core.yamlconf import ConfigError
from sweeps.preflight import run_train_flops
from sweeps.spec import load_spec, spec_from_mapping

REPO = Path(__file__).resolve().parents[1]


def _grid(**over):
    d = {"name": "t", "grid": {"presets": ["tiny-xs", "tiny-s"], "fractions": [0.1, 1.0]},
         "base": {"steps": 20, "data": {"resolution": 32}}}
    d.update(over)
    return d


def _write(tmp_path, data) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_paper_grid_matches_the_paper():
    spec = load_spec(REPO / "sweeps" / "grid.yaml")
    runs = spec.runs()
    assert len(runs) == 12
    assert {(r.model["preset"], r.data.fraction) for r in runs} == set(
        itertools.product(["XS", "S", "B", "L"], [0.01, 0.1, 1.0]))
    r = runs[0]
    assert (r.data.resolution, r.data.frames, r.data.fps, r.batch_size, r.precision) == (256, 8, 2.0, 256, "bf16")
    assert (r.optim.lr, r.optim.betas, r.optim.weight_decay, r.optim.warmup_steps) == (1e-4, (0.9, 0.95), 0.01, 1000)
    assert (r.eval.every, r.eval.from_step, r.checkpoint_every) == (10000, 50000, 10000)
    assert {b.kind for b in r.eval.benchmarks} == {"re10k", "probe"}
    # Table B.3: 32 / 32 / 64 / 128 H200 = nodes of 8 GPUs
    gpus = {p: spec.slurm_for(p).nodes * spec.slurm_for(p).gpus_per_node for p in ["XS", "S", "B", "L"]}
    assert gpus == {"XS": 32, "S": 32, "B": 64, "L": 128}
    assert all(spec.slurm_for(p).tasks_per_node == spec.slurm_for(p).gpus_per_node for p in gpus)
    assert len({r.run_id for r in runs}) == 12


def test_demo_grid_is_design_v15():
    """The demo (design v15 = v14 with the trunks resampled by the bootstrap and a third NVS benchmark): the muP ladder w32 / w48 / w64 x D = 64 / 128 / 256 / 512 / 1024 / 2048 of 2048 clips x
    lengths 1250 / 2000 / 4000 sharing the 4000-step trunk, batch 32, laws on final checkpoints with L_inf held at 0
    and gamma at 1, plus a held-out run at 2x the grid's largest compute."""
    spec = load_spec(REPO / "sweeps" / "demo.yaml")
    runs = [r for r in spec.runs() if r.sweep == "demo"]
    held = [r for r in spec.runs() if r.sweep == "demo-holdout"]
    assert len(runs) == 54 and {r.model["preset"] for r in runs} == {"tiny-w32", "tiny-w48", "tiny-w64"}
    assert all(r.model["parametrization"] == "mup" and r.model["mup_base_width"] == 16 for r in runs)
    assert sorted({r.data.fraction for r in runs}) == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]  # D = 64 .. 2048
    assert {r.steps for r in runs} == {1250, 2000, 4000} and {r.batch_size for r in runs} == {32}
    assert all(r.model["preset"] in PRESETS for r in runs)
    # the shorter runs start from their trunk's checkpoints at 80% of their own length (where their decay starts)
    assert sorted((r.steps, int(r.start_from[-10:-3])) for r in runs if r.steps < 4000) == \
        [(1250, 1000)] * 18 + [(2000, 1600)] * 18
    assert spec.fit.checkpoints == "final" and spec.fit.min_step == 300 and spec.fit.fix == {"L_inf": 0, "gamma": 1}
    assert spec.fit.rayder_fit_args() == (" --checkpoints final --min-step 300 --fix L_inf=0 --fix gamma=1"
                                          " --bootstrap-by trunk")  # design v15: the trunks are resampled
    assert spec.fit.replicates == "mean" and "--replicates" not in spec.fit.rayder_fit_args()
    median = load_spec(REPO / "sweeps" / "demo.yaml", ["fit.replicates=median"]).fit
    assert median.rayder_fit_args().endswith(" --replicates median --bootstrap-by trunk")
    # the primary (first) NVS benchmark is the in-distribution set; the held-out families get their own law
    assert [b.name for b in runs[0].eval.benchmarks if b.kind == "re10k"] == ["indist-synth", "indist-wide",
                                                                              "re10k-synth"]
    wide = runs[0].eval.benchmarks[1]  # the in-distribution scenes, context views 12-24 frames apart
    assert wide.path == runs[0].eval.benchmarks[0].path and wide.index.endswith("evaluation_index_gaps12-24.json")
    assert [b.protocols for b in runs[0].eval.benchmarks if b.kind == "probe"] == [["per_scene"]]
    for r in runs:  # 6 log-spaced evaluated checkpoints per trunk, all after warmup
        steps = r.eval.steps_for(r.steps)
        assert len(steps) == 6 and min(steps) > r.optim.warmup_steps, r.run_id
        assert r.optim.skip_grad_factor is None  # the grad-spike rule is off
    # two held-out runs beyond the grid, both on all the data: the largest width trained twice as long, with the same
    # WSD shape (constant LR, then halving 4 times over the last 20%), and the next width at the grid's length
    assert [(h.model["preset"], h.steps) for h in held] == [("tiny-w64", 8000), ("tiny-w128", 4000)]
    assert all(h.start_from is None and h.data.fraction == 1.0 for h in held)
    assert [(h.optim.decay_start, h.optim.decay_halve_every) for h in held] == [(6400, 400), (3200, 200)]
    # the runs of design v9 (lengths 1250 / 1600 / 2000) are the same runs in this design where lengths agree
    v9 = {r.run_id for r in load_spec(REPO / "sweeps" / "demo.yaml", DESIGN_V9).runs() if r.sweep == "demo"}
    assert len(v9 & {r.run_id for r in runs}) == 16  # the 1250- and 2000-step runs of w32 and w64
    # design v11 (w16 / w32 / w64 x D = 128 / 512 / 1024 / 2048): its w32 and w64 runs are runs of this design, so a
    # store of v11 runs trains only the w48 and D = 256 runs; v12 (v11 + D = 256) shares those at D = 256 too
    ids = {r.run_id for r in runs}
    v11 = {r.run_id: r.model["preset"] for r in load_spec(REPO / "sweeps" / "demo.yaml", DESIGN_V11).runs()
           if r.sweep == "demo"}
    assert len(v11) == 36 and {i for i, p in v11.items() if p != "tiny-w16"} <= ids and len(ids & set(v11)) == 24
    v12 = {r.run_id for r in load_spec(REPO / "sweeps" / "demo.yaml", DESIGN_V11 + DESIGN_V12).runs()
           if r.sweep == "demo"}
    assert len(v12) == 45 and len(ids & v12) == 30
    # design v13 (v14 without D = 64) is 45 of these runs: a v13 store trains only the 9 runs at D = 64
    v13 = {r.run_id for r in load_spec(REPO / "sweeps" / "demo.yaml", DESIGN_V13).runs() if r.sweep == "demo"}
    assert len(v13) == 45 and v13 < ids and {r.data.fraction for r in runs if r.run_id not in v13} == {1 / 32}


def test_holdout_runs_take_the_grid_seeds_unless_they_name_one():
    """A held-out entry without `seed` is trained once per grid seed (a seed-1 study is validated by a seed-1 run,
    as `make seed-check` needs); with `seed` it is trained with that seed only."""
    def held(*sets):
        spec = load_spec(REPO / "sweeps" / "demo.yaml", list(sets))
        return sorted(r.seed for r in spec.runs() if r.sweep == "demo-holdout")

    assert held() == [0, 0]  # the demo's two held-out runs
    assert held("grid.seeds=[1]") == [1, 1]
    assert held("grid.seeds=[0, 1]") == [0, 0, 1, 1]
    assert held("grid.seeds=[0, 1]", "holdout=[{preset: tiny-w64, fraction: 1.0, seed: 1}]") == [1]


# design v6 of the demo as docs/benchmarks.md gives it: sweeps/demo.yaml with these overrides
DESIGN_V6 = ["name=demo-lengths", "out_dir=runs/demo-lengths", "db=results-lengths.duckdb",
             "grid.presets=[tiny-w16,tiny-w32,tiny-w64]", "grid.fractions=[0.015625, 0.25, 1.0]",
             "grid.steps={0.015625: [1000], 0.25: [1000, 2000], 1.0: [1000, 2000, 4000]}",
             "grid.exclude=[{preset: tiny-w64, steps: 4000}]", "holdout=[{preset: tiny-w64, fraction: 1.0, steps: 4000}]"]


def test_lengths_grid_is_design_v6():
    """The demo with DESIGN_V6: D = 16 / 256 / 1024 with 1000 steps at D = 16, 1000 / 2000 at 256, 1000 / 2000 / 4000
    at 1024 (w64 not 4000: its held-out run), one WSD shape for every length."""
    spec = load_spec(REPO / "sweeps" / "demo.yaml", DESIGN_V6)
    runs = [r for r in spec.runs() if r.sweep == spec.name]
    cells = {(r.model["preset"], r.data.fraction, r.steps) for r in runs}
    assert len(runs) == len(cells) == 17
    assert sorted({r.data.fraction for r in runs}) == [1 / 64, 1 / 4, 1.0]
    assert {n for p, f, n in cells if p == "tiny-w16" and f == 1.0} == {1000, 2000, 4000}
    assert {n for p, f, n in cells if p == "tiny-w64" and f == 1.0} == {1000, 2000}
    assert {n for p, f, n in cells if f == 1 / 64} == {1000}
    for r in runs:  # constant LR, then halving 4 times over the last 20% of every length
        assert r.optim.decay_start == 0.8 * r.steps and r.optim.decay_halve_every * 4 == 0.2 * r.steps, r.run_id
    held = [r for r in spec.runs() if r.sweep != spec.name]
    assert [(h.model["preset"], h.steps) for h in held] == [("tiny-w64", 4000)]


DESIGN_V11 = ["grid.presets=[tiny-w16,tiny-w32,tiny-w64]", "grid.fractions=[0.0625,0.25,0.5,1.0]"]
DESIGN_V12 = ["grid.fractions=[0.0625,0.125,0.25,0.5,1.0]"]  # after DESIGN_V11: v11 + D = 256
DESIGN_V13 = [*DESIGN_V12, "fit.fix={L_inf: 0}"]  # on the demo (v14): no D = 64, gamma free

# design v9 (the demo before lengths reached 4000 steps), as docs/benchmarks.md gives it
DESIGN_V9 = ["base.steps=2000", "base.optim.decay_start=1600", "base.optim.decay_halve_every=100",
             "grid.steps=[1250, 1600, 2000]", "holdout=[{preset: tiny-w64, fraction: 1.0, steps: 4000}]",
             *DESIGN_V11]

DESIGN_V8 = ["name=v8", "out_dir=runs/v8", "db=results-v8.duckdb", "base.batch_size=32",
             "grid.fractions=[0.0625, 0.25, 1.0]", "grid.steps=[1250, 1600, 2000]", "fit.checkpoints=final",
             "fit.fix={L_inf: 0}", *DESIGN_V9[:3], DESIGN_V9[4], DESIGN_V11[0]]


def test_design_v8_shares_trunks_and_fits_final_checkpoints():
    """The demo with DESIGN_V8 (docs/benchmarks.md): 3 widths x D = 128 / 512 / 2048 x lengths 1250 / 1600 / 2000; the
    2000-step run of each point saves steps 1000 and 1280, where the shorter runs start; laws on final checkpoints
    with L_inf held at 0; the held-out run is tiny-w64 x 4000 (no trunk)."""
    spec = load_spec(REPO / "sweeps" / "demo.yaml", DESIGN_V8)
    runs = [r for r in spec.runs() if r.sweep == spec.name]
    assert len(runs) == 27 and {r.batch_size for r in runs} == {32}
    trunks = [r for r in runs if r.steps == 2000]
    assert all(t.checkpoint_steps == [1000, 1280] and t.start_from is None for t in trunks)
    assert sorted((r.steps, int(r.start_from[-10:-3])) for r in runs if r.steps < 2000) == \
        [(1250, 1000)] * 9 + [(1600, 1280)] * 9
    assert spec.fit.checkpoints == "final" and spec.fit.fix == {"L_inf": 0}
    held = [r for r in spec.runs() if r.sweep != spec.name]
    assert [(h.model["preset"], h.steps, h.start_from) for h in held] == [("tiny-w64", 4000, None)]


def test_run_length_axis_scales_the_schedule_and_excludes_points(tmp_path):
    base = {"steps": 100, "data": {"resolution": 32}, "optim": {"decay_start": 80, "decay_halve_every": 5}}
    spec = spec_from_mapping(_grid(base=base, grid={"presets": ["tiny-xs", "tiny-s"], "fractions": [0.1, 1.0],
                                                    "steps": {0.1: [50], 1.0: [50, 200]},
                                                    "exclude": [{"preset": "tiny-s", "steps": 200}]}))
    runs = spec.runs()
    assert sorted((r.model["preset"], r.data.fraction, r.steps) for r in runs) == [
        ("tiny-s", 0.1, 50), ("tiny-s", 1.0, 50), ("tiny-xs", 0.1, 50), ("tiny-xs", 1.0, 50), ("tiny-xs", 1.0, 200)]
    by_steps = {r.steps: (r.optim.decay_start, r.optim.decay_halve_every) for r in runs}
    assert by_steps == {50: (40, 2), 200: (160, 10)}  # 80 x 0.5 / 2, round(5 x 0.5) = 2 (banker's), 5 x 2
    assert len({r.run_id for r in runs}) == 5
    # a plain list is an axis for every fraction; a grid without it keeps base.steps and the old run ids
    flat = spec_from_mapping(_grid(base=base, grid={"presets": ["tiny-xs"], "fractions": [1.0], "steps": [100, 300]}))
    assert [r.steps for r in flat.runs()] == [100, 300]
    plain = spec_from_mapping(_grid(base=base, grid={"presets": ["tiny-xs"], "fractions": [1.0]}))
    assert flat.runs()[0].run_id == plain.runs()[0].run_id  # the base length is the same run


def test_shorter_runs_start_from_the_longest_run_of_their_grid_point():
    """grid.steps with share_trunks (default): each shorter run names the longest run's checkpoint at its own decay
    start, which the longest run saves; runs of other grid points never share; run ids are those without sharing."""
    base = {"steps": 100, "data": {"resolution": 32}, "optim": {"decay_start": 80, "decay_halve_every": 5}}
    axes = {"presets": ["tiny-xs", "tiny-s"], "fractions": [0.1, 1.0], "steps": {0.1: [50], 1.0: [50, 100, 200]}}
    runs = {(r.model["preset"], r.data.fraction, r.steps): r for r in spec_from_mapping(_grid(base=base, grid=axes)).runs()}
    for preset in ("tiny-xs", "tiny-s"):
        trunk = runs[(preset, 1.0, 200)]
        assert trunk.start_from is None and trunk.checkpoint_steps == [40, 80]  # decay starts of lengths 50 / 100
        for steps, fork in ((50, 40), (100, 80)):
            assert runs[(preset, 1.0, steps)].start_from == str(trunk.run_dir / "checkpoints" / f"step_{fork:07d}.pt")
        assert runs[(preset, 0.1, 50)].start_from is None and runs[(preset, 0.1, 50)].checkpoint_steps == []
    unshared = spec_from_mapping(_grid(base=base, grid={**axes, "share_trunks": False})).runs()
    assert {r.run_id for r in unshared} == {r.run_id for r in runs.values()}
    assert all(r.start_from is None and r.checkpoint_steps == [] for r in unshared)
    # the launch's compute estimate counts only the steps a run trains: 50 - 40 of the 50-step run
    alone = {r.run_id: r for r in unshared}
    short = runs[("tiny-xs", 1.0, 50)]
    assert run_train_flops(short) == pytest.approx(run_train_flops(alone[short.run_id]) * 10 / 50)


@pytest.mark.parametrize("grid, key", [
    ({"steps": {0.1: [50]}}, "no run lengths for fraction"),
    ({"steps": {0.5: [50], 0.1: [50], 1.0: [50]}}, "steps.0.5: not a fraction"),
    ({"steps": [50, 50]}, "duplicates"),
    ({"steps": [0]}, "positive integer"),
    ({"exclude": [{"preset": "tiny-w46"}]}, "grid.exclude[0].preset: unknown model preset 'tiny-w46'"),
    ({"exclude": [{"width": 3}]}, "exclude[0].width: unknown key"),
    ({"exclude": [{"preset": ["tiny-xs", "tiny-s"]}]}, "every grid point is excluded"),
])
def test_run_length_axis_errors_name_the_key(tmp_path, grid, key):
    data = _grid(grid={"presets": ["tiny-xs", "tiny-s"], "fractions": [0.1, 1.0], **grid})
    with pytest.raises(ConfigError, match=None) as exc:
        load_spec(_write(tmp_path, data))
    assert key in str(exc.value) and "g.yaml" in str(exc.value)
    # with a run-length axis the grid owns the length: a per-preset `steps` would be overwritten silently
    data = _grid(grid={"presets": ["tiny-xs"], "fractions": [1.0], "steps": [50]},
                 preset_overrides={"tiny-xs": {"steps": 80}})
    with pytest.raises(ConfigError, match=r"g.yaml: preset_overrides.tiny-xs.steps: set by the grid \(grid.steps\)"):
        load_spec(_write(tmp_path, data))


def test_expansion_and_identity(tmp_path):
    spec = spec_from_mapping(_grid(grid={"presets": ["tiny-xs"], "fractions": [0.1, 1.0], "seeds": [0, 1],
                                         "ablations": {"nolocal": {"local_layers": False}}},
                                   preset_overrides={"tiny-xs": {"steps": 7}}, out_dir=str(tmp_path / "runs")))
    runs = spec.runs()
    assert len(runs) == 2 * 2 * 2  # (baseline + 1 ablation) x fractions x seeds
    assert {r.sweep for r in runs} == {"t", "t-nolocal"}
    assert all(r.steps == 7 and r.data.resolution == 32 for r in runs)
    assert all(r.run_dir.parent == (tmp_path / "runs") for r in runs)
    assert sum(r.model.get("local_layers") is False for r in runs) == 4
    # identity is the resolved config: same grid -> same ids; a changed training key -> new ids
    assert [r.run_id for r in spec.runs()] == [r.run_id for r in runs]
    other = spec_from_mapping(_grid(grid={"presets": ["tiny-xs"], "fractions": [0.1, 1.0], "seeds": [0, 1],
                                          "ablations": {"nolocal": {"local_layers": False}}},
                                    preset_overrides={"tiny-xs": {"steps": 8}}))
    assert not {r.run_id for r in runs} & {r.run_id for r in other.runs()}
    # out_dir is not part of the identity
    moved = spec_from_mapping(_grid(grid={"presets": ["tiny-xs"], "fractions": [0.1, 1.0], "seeds": [0, 1],
                                          "ablations": {"nolocal": {"local_layers": False}}},
                                    preset_overrides={"tiny-xs": {"steps": 7}}, out_dir="elsewhere"))
    assert [r.run_id for r in moved.runs()] == [r.run_id for r in runs]


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["base"].update(stepz=3), "base.stepz"),
    (lambda d: d["base"].update(steps="many"), "base.steps"),
    (lambda d: d["base"]["data"].update(resolution=33), "base.data"),
    (lambda d: d["base"]["data"].update(fraction=0.5), "base.data.fraction"),
    (lambda d: d["base"].update(model={"preset": "XS"}), "base.model.preset"),
    (lambda d: d["base"].update(model={"widht": 64}), "widht"),
    (lambda d: d["grid"].update(presets=["tiny-xs", "huge"]), "grid.presets[1]"),
    (lambda d: d["grid"].update(fractions=[0.1, 1.5]), "grid.fractions[1]: a data fraction"),
    (lambda d: d["grid"].update(fractions=[0.1, 0.1]), "duplicates"),
    (lambda d: d["grid"].update(ablations={"x": {"kernel": 4}}), "grid.ablations.x"),
    (lambda d: d.update(preset_overrides={"tiny-b": {"steps": 3}}), "preset_overrides.tiny-b"),
    (lambda d: d.update(preset_overrides={"tiny-s": {"optim": {"lr": -1}}}), "preset_overrides.tiny-s"),
    (lambda d: d.update(slurm={"nodes": 0}), "slurm"),
    (lambda d: d.update(slurm={"gpus": 8}), "slurm.gpus"),
    (lambda d: d.update(slurm={"per_preset": {"tiny-s": {"nodez": 2}}}), "slurm.per_preset.tiny-s.nodez"),
    (lambda d: d.update(slurm={"per_preset": {"XL": {"nodes": 2}}}), "slurm.per_preset.XL"),
    (lambda d: d.update(local={"parallel": 0}), "local"),
    (lambda d: d.update(fit={"replicates": "max"}), "fit"),
    (lambda d: d.pop("grid"), "grid: required key is missing"),
    (lambda d: d.update(colour="red"), "colour: unknown key"),
])
def test_errors_name_the_file_and_key(tmp_path, mutate, key):
    data = _grid()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_spec(path).runs()
    msg = str(info.value)
    assert str(path) in msg and key in msg, msg


def test_invalid_yaml_and_overrides(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ngrid: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML \(line"):
        load_spec(bad)
    path = _write(tmp_path, _grid())
    spec = load_spec(path, ["base.steps=5", "grid.fractions=[0.5]"])
    assert [r.steps for r in spec.runs()] == [5, 5] and {r.data.fraction for r in spec.runs()} == {0.5}
    with pytest.raises(ConfigError, match="base: steps"):
        load_spec(path, ["base.steps=-1"]).runs()


def test_slurm_block_to_sbatch_parameters():
    spec = spec_from_mapping(_grid(slurm={
        "partition": "gpu", "account": "proj", "qos": "high", "constraint": "h200", "nodes": 2, "gpus_per_node": 8,
        "tasks_per_node": 8, "cpus_per_task": 12, "mem_gb": 0, "time_min": 600, "array_parallelism": 3,
        "extra": {"exclusive": True, "mail_type": "END"}, "setup": ["module load cuda"],
        "per_preset": {"tiny-s": {"nodes": 4, "time_min": 900}}}))
    xs, s = spec.slurm_for("tiny-xs"), spec.slurm_for("tiny-s")
    assert (xs.nodes, s.nodes, s.time_min, s.partition, xs.world_size, s.world_size) == (2, 4, 900, "gpu", 16, 32)
    params = s.executor_parameters()
    assert params == {"nodes": 4, "ntasks_per_node": 8, "cpus_per_task": 12, "time": 900, "array_parallelism": 3,
                      "signal_delay_s": 120, "partition": "gpu", "account": "proj", "qos": "high",
                      "constraint": "h200", "gpus_per_node": 8, "mem": "0", "setup": ["module load cuda"],
                      "additional_parameters": {"exclusive": True, "mail_type": "END"}}
    # submitit accepts exactly these keys and renders them as #SBATCH lines
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string(command="python -c pass", folder="/tmp/x", **params)
    for line in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu", "--account=proj",
                 "--qos=high", "--constraint=h200", "--mem=0", "--time=900", "--exclusive", "--mail-type=END",
                 "--signal=USR2@120"):
        assert f"#SBATCH {line}" in text, line
