"""Video data for RayDer scaling studies: synthetic corpus, ingestion, shards, manifests, loader, benchmarks.

Public entry points (import from the submodules; this package imports nothing heavy on its own):

* :mod:`rayder_core.data.synth` -- ``synthesize(out, clips=..., ...)``, ``make_clip``, the ray caster.
* :mod:`rayder_core.data.ingest` -- ``ingest(videos, out, ...)`` real videos -> H.264 6 fps shards.
* :mod:`rayder_core.data.manifest` -- ``build_manifest``, ``Manifest`` (nested 1%/10%/100% fractions).
* :mod:`rayder_core.data.loader` -- ``VideoClipLoader`` (exactly resumable, DDP/worker split).
* :mod:`rayder_core.data.evalsets` -- RE10K/pixelSplat chunks (``write_re10k_chunks``, ``Re10kBenchmark``)
  and the camera probe set (``write_probe_set``, ``ProbeSet``).
* :mod:`rayder_core.data.shards` -- mp4 encode/decode (PyAV) and safe WebDataset tar I/O.
"""
