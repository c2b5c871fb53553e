"""Scaling-law sweeps: grid files (`spec`), the `rayder-sweep` launcher (SLURM via submitit, or local), run state
without SLURM accounting (`state`), the submitit job (`job`) and the embedded demo (`python -m sweeps.demo`)."""
