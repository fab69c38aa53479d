"""The annotator's Gradio temp folder is emptied of old renders while the server runs."""

import os
import time

from annotator.temp_cleaner import TempCleaner, own_temp_folder, remove_old_files


def test_old_files_and_empty_folders_go_new_files_stay(tmp_path):
    old, new = tmp_path / "a1" / "render.jpg", tmp_path / "b2" / "render.jpg"
    for path in (old, new):
        path.parent.mkdir()
        path.write_bytes(b"jpeg")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert remove_old_files(tmp_path, max_age_s=600) == 1
    assert not old.parent.exists() and new.read_bytes() == b"jpeg"


def test_the_cleaner_runs_in_the_background_and_removes_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    folder = own_temp_folder()
    assert os.environ["GRADIO_TEMP_DIR"] == str(folder) and folder.is_dir()
    stale = folder / "x" / "render.jpg"
    stale.parent.mkdir()
    stale.write_bytes(b"jpeg")
    os.utime(stale, (0, 0))
    cleaner = TempCleaner(folder, max_age_s=600, every_s=0.05)
    cleaner.start()
    deadline = time.time() + 10
    while stale.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not stale.exists()
    cleaner.stop(remove=True)
    assert not folder.exists()
