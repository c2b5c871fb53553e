"""The overlap curriculum inside the training loader: frames drawn by the annealed target overlap, exact resume
(identical batches after load_state_dict), independence of num_workers, the config switch none | frame_interval |
overlap, and the feature-overlap source for clips without poses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayder_core.data.loader import VideoClipLoader
from rayder_core.data.manifest import Manifest
from rayder_core.data.curriculum import CurriculumSampler
from rayder_core.train_config import load_train_config

STEPS = 12


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _shards(synth_data):
    return Manifest.load(synth_data.manifest).shards(1.0)


def _loader(synth_data, mode="overlap", **kw):
    args = dict(frames=4, fps=2.0, resolution=32, batch_size=2, seed=5, cache_mb=64,
                curriculum=CurriculumSampler(mode, span_views=2), total_batches=STEPS)
    args.update(kw)
    return VideoClipLoader(_shards(synth_data), **args)


def _record_gaps(monkeypatch):
    """Record (progress, gap) of every clip the sampler draws."""
    seen = []
    real = CurriculumSampler.sample

    def sample(self, n_frames, n_views, progress, rng, profile=None):
        idx, gap = real(self, n_frames, n_views, progress, rng, profile)
        seen.append((progress, gap, profile is not None))
        return idx, gap

    monkeypatch.setattr(CurriculumSampler, "sample", sample)
    return seen


@pytest.mark.parametrize("mode", ["overlap", "frame_interval"])
def test_curriculum_resume_gives_identical_batches(synth_data, mode):
    reference = take(_loader(synth_data, mode), 9)
    first = _loader(synth_data, mode)
    take(first, 4)
    state = first.state_dict()
    assert state["batches"] == 4
    resumed = _loader(synth_data, mode)
    resumed.load_state_dict(state)
    rest = take(resumed, 5)
    for a, b in zip(reference[4:], rest):
        assert a["key"] == b["key"]
        assert torch.equal(a["x"], b["x"])
    assert resumed.state_dict()["batches"] == 9


def test_curriculum_stream_does_not_depend_on_workers(synth_data):
    ref = take(_loader(synth_data), 5)
    ld = _loader(synth_data, num_workers=2)
    ld.load_state_dict({"epoch": 0, "samples": 2, "batches": 1})
    got = take(ld, 4)
    assert [b["key"] for b in got] == [b["key"] for b in ref[1:]]
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(ref[1:], got))


def test_overlap_curriculum_anneals_the_frame_gap(synth_data, monkeypatch):
    """Progress = batch index / total_batches; gaps start at the easiest (target overlap 1) and grow as the target
    range anneals to [0.5, 1]; every clip's profile comes from its poses (synthetic clips have cameras)."""
    seen = _record_gaps(monkeypatch)
    take(_loader(synth_data, total_batches=10), 10)
    progress = sorted({p for p, _, _ in seen})
    assert progress == pytest.approx([b / 10 for b in range(10)])
    assert all(has_profile for _, _, has_profile in seen)
    early = [g for p, g, _ in seen if p == 0.0]
    late = [g for p, g, _ in seen if p >= 0.6]
    print(f"gaps at progress 0: {early}; at progress >= 0.6: {late}")
    assert max(early) <= 1 < max(late) and np.mean(late) > np.mean(early)


def test_mode_none_is_fps_sampling(synth_data):
    """mode none (or no sampler) draws frames by fps exactly as before the curriculum existed."""
    plain = take(VideoClipLoader(_shards(synth_data), frames=4, fps=2.0, resolution=32, batch_size=2, seed=5), 3)
    none = take(_loader(synth_data, "none", total_batches=None), 3)
    assert all(torch.equal(a["x"], b["x"]) and a["key"] == b["key"] for a, b in zip(plain, none))


def test_feature_overlap_source_without_poses(synth_data, monkeypatch):
    seen = _record_gaps(monkeypatch)
    ld = _loader(synth_data, overlap_source="feature")
    batches = take(ld, 3)
    assert all(b["x"].shape == (2, 4, 3, 32, 32) for b in batches)
    assert all(has_profile for _, _, has_profile in seen)
    # the image-only profile is a score of frame pairs: a frame against itself scores 1, and a clip's profile lies in
    # [0, 1]; its gaps are what the sampler drew (checked against the profile's own inversion, not its shape)
    for prof in ld._stream._profiles.values():
        assert 0.0 <= prof.min() and prof.max() <= 1.0 + 1e-12


def test_loaded_clips_have_distinct_frames_and_their_poses_overlap_as_targeted(synth_data, monkeypatch):
    """Every clip the loader draws has 4 distinct source frames (before issue 24 early clips were e.g. [50, 50, 50,
    51]); the overlap of each clip's frame pair one interval apart, computed from the clip's own two camera poses
    (not from the profile, which averages all pairs at that gap), is high at the start and reaches down towards the
    annealed lower bound 0.5 later."""
    from rayder_core.data.loader import _Stream
    from rayder_core.geometry import Camera
    from rayder_core.data.curriculum import pairwise_covisibility

    drawn = []
    real = _Stream.curriculum_indices

    def record(self, ref, batch, rng, fh):
        idx = real(self, ref, batch, rng, fh)
        drawn.append((self.progress(batch), ref.meta, idx))
        return idx

    monkeypatch.setattr(_Stream, "curriculum_indices", record)
    take(_loader(synth_data, total_batches=10), 10)
    early, late = [], []
    for progress, meta, idx in drawn:
        assert len(set(idx.tolist())) == len(idx) == 4, idx
        cams, h, w = meta["cameras"], int(meta["height"]), int(meta["width"])
        pick = [int(idx[0]), int(idx[0]) + 1 if progress == 0.0 else int(idx[-1])]
        pair = Camera(R=torch.tensor(cams["R"], dtype=torch.float64)[pick],
                      t=torch.tensor(cams["t"], dtype=torch.float64)[pick],
                      f=torch.tensor(cams["f"], dtype=torch.float64)[pick])
        overlap = float(pairwise_covisibility(pair, h, w)[0, 1])
        (early if progress == 0.0 else late).append(overlap)
    print(f"pose overlap of neighbouring frames at progress 0: {np.round(early, 3)}; of the window ends later: "
          f"{np.round(late, 3)}")
    assert min(early) > 0.8
    assert min(late) < min(early) and min(late) >= 0.5 - 0.05 - 0.15


def test_curriculum_needs_total_batches(synth_data):
    with pytest.raises(ValueError, match="total_batches"):
        _loader(synth_data, total_batches=None)


def test_config_switch_and_run_ids(tmp_path):
    base = {"model": {"family": "erayzer", "preset": "tiny-xs"}, "data": {"frames": 4, "resolution": 16}}
    plain = load_train_config(base)
    assert plain.data.curriculum.mode == "none" and plain.data.curriculum.sampler() is None
    explicit_none = load_train_config({**base, "data": {**base["data"], "curriculum": {"mode": "none"}}})
    assert explicit_none.run_id == plain.run_id  # run ids from before the curriculum stay valid
    cur = load_train_config({**base, "data": {**base["data"], "curriculum": {"mode": "overlap", "end": [0.75, 1]}}})
    assert cur.run_id != plain.run_id
    s = cur.data.curriculum.sampler()
    assert isinstance(s, CurriculumSampler) and s.mode == "overlap" and s.end == (0.75, 1.0)
    with pytest.raises(Exception, match="curriculum"):
        load_train_config({**base, "data": {**base["data"], "curriculum": {"mode": "sometimes"}}})


def test_erayzer_training_with_the_overlap_curriculum_resumes_bit_exact(synth_data, tmp_path):
    """rayder-train with model.family erayzer and data.curriculum.mode overlap: stopped at step 2 and resumed, the
    run logs exactly the losses of an uninterrupted run (the loader's batch count is in the checkpoint)."""
    import json

    from rayder_core.training.trainer import run_training

    def cfg(out):
        return load_train_config({
            "model": {"family": "erayzer", "preset": "tiny-xs"},
            "data": {"manifest": str(synth_data.manifest), "frames": 4, "resolution": 16,
                     "curriculum": {"mode": "overlap"}},
            "optim": {"warmup_steps": 1, "lr": 1e-3}, "eval": {"every": 100, "from_step": 100, "benchmarks": []},
            "steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "precision": "fp32",
            "sweep": "cur", "out_dir": str(out)})

    def losses(run_dir):
        return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    ref = run_training(cfg(tmp_path / "a"), db=None, progress=False)
    cut = cfg(tmp_path / "b")
    first = run_training(cut, db=None, progress=False, should_stop=lambda s: s == 2)
    assert first.status == "preempted" and first.step == 2
    second = run_training(cut, db=None, progress=False)
    assert second.status == "finished" and losses(second.run_dir) == losses(ref.run_dir)
