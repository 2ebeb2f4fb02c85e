"""Scratch folders for the files the app offers for download (chat exports, checkpoints, zips).

One folder per process under the system's temp dir, one subfolder per (kind, session), rewritten in place rather
than a new temp folder each time. Subfolders untouched for MAX_AGE_S, and the oldest beyond MAX_FOLDERS, are
deleted whenever a new one is made, and the whole folder goes when the process exits: files never pile up. (Gradio
serves its own copy of each file from its cache, which `delete_cache` in app.py cleans.)
"""
from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

MAX_AGE_S = 3600.0  # a download folder unused for an hour is deleted
MAX_FOLDERS = 200  # and never more than this many at once (oldest deleted first)

_root: Path | None = None
_lock = threading.Lock()


def root() -> Path:
    global _root
    with _lock:
        if _root is None or not _root.exists():
            _root = Path(tempfile.mkdtemp(prefix="chatlab-downloads-"))
            atexit.register(shutil.rmtree, _root, True)
        return _root


def folder(kind: str, key: str | None) -> Path:
    """The (kind, key) scratch folder, made if needed and marked as used now; old folders are pruned."""
    name = f"{kind}-{hashlib.sha1(str(key).encode()).hexdigest()[:16]}"  # a session hash is not trusted as a path
    path = root() / name
    path.mkdir(exist_ok=True)
    path.touch()  # its age counts from the last use
    prune(keep=path)
    return path


def prune(keep: Path | None = None, max_age_s: float = MAX_AGE_S, max_folders: int = MAX_FOLDERS) -> int:
    """Delete folders unused for max_age_s, then the oldest beyond max_folders; returns how many went."""
    now, removed = time.time(), 0
    try:
        folders = sorted((p for p in root().iterdir() if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
    except OSError:
        return 0
    excess = len(folders) + (keep is not None) - max_folders
    for position, path in enumerate(folders):
        try:
            too_old = now - path.stat().st_mtime > max_age_s
        except OSError:
            continue
        if too_old or position < excess:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
