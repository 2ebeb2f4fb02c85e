"""chat.downloads: download files go to one reused folder per session, and old folders are deleted."""
from __future__ import annotations

import os
import time

from chat import downloads


def test_one_folder_per_session_reused_and_old_or_excess_folders_deleted(monkeypatch, tmp_path):
    monkeypatch.setattr(downloads, "_root", tmp_path)
    a = downloads.folder("chat", "session-a")
    assert downloads.folder("chat", "session-a") == a and a.parent == tmp_path
    assert downloads.folder("chat", "../../etc").parent == tmp_path  # a session hash is never a path
    old = downloads.folder("chat", "old-session")
    os.utime(old, (time.time() - 2 * downloads.MAX_AGE_S,) * 2)
    downloads.folder("chat", "session-b")
    assert not old.exists() and a.exists()
    for i in range(10):
        downloads.folder("mnist", f"s{i}")
    assert downloads.prune(max_folders=4) >= 8 and len(list(tmp_path.iterdir())) == 4


def test_the_chat_export_rewrites_its_sessions_files_instead_of_making_new_ones(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from chat.ui import chat_tab

    monkeypatch.setattr(downloads, "_root", tmp_path)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    request = SimpleNamespace(session_hash="abc", headers={})
    paths = {chat_tab.export(history, "Be brief.", request) for _ in range(5)}
    assert len(paths) == 1 and len(list(tmp_path.iterdir())) == 1
    markdown, json_path = paths.pop()
    assert "Hello!" in open(markdown, encoding="utf-8").read() and json_path.endswith(".json")
