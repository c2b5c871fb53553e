"""Small, crash-safe file helpers shared by training, evaluation, sweeps and the data manifest.

Run directories are the source of truth of a study, so every file there is written so that a process killed at any
moment leaves either the old or the new content: whole files through a temp file + `os.replace`, JSON-lines by
appending one line per record (a torn last line is ignored when reading).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (temp file in the same directory, then rename); creates parent dirs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object from `path`, or None if the file is absent, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file ([] if absent); a torn last line (a writer killed mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one record as a JSON line."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def truncate_jsonl(path: str | os.PathLike, max_step: int) -> None:
    """Drop the records whose `step` is after `max_step` (e.g. logged after the checkpoint a run resumes from)."""
    if Path(path).exists():
        rows = [r for r in read_jsonl(path) if int(r["step"]) <= max_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
