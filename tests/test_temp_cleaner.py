"""The annotator's Gradio temp folder is emptied of old renders while the server runs, but the
render a session still shows is kept however old it is (its browser sends it back)."""

import gc
import os
import time

from annotator.temp_cleaner import (
    RENDERS,
    ShownFiles,
    TempCleaner,
    own_temp_folder,
    remove_old_files,
)


def _file(path, age_s=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"jpeg")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


class Session:  # stands for an AnnotationSession (a dataclass: not hashable)
    __hash__ = None


def test_old_files_and_empty_folders_go_new_files_stay(tmp_path):
    old, new = _file(tmp_path / "a1" / "render.jpg", 3600), _file(tmp_path / "b2" / "render.jpg")
    old_folder_time = time.time() - 3600
    assert remove_old_files(tmp_path, max_age_s=600) == [str(old)]
    assert old.parent.exists()  # just emptied: its mtime is now (Gradio may be writing into it)
    os.utime(old.parent, (old_folder_time, old_folder_time))
    assert remove_old_files(tmp_path, max_age_s=600) == []
    assert not old.parent.exists() and new.read_bytes() == b"jpeg"


def test_a_fresh_empty_folder_is_left_for_gradio_to_write_into(tmp_path):
    (tmp_path / "hash").mkdir()  # Gradio: mkdir, then write the file
    remove_old_files(tmp_path, max_age_s=600, now=time.time() + 100)
    assert (tmp_path / "hash").is_dir()


def test_renders_go_after_a_minute_other_files_after_five(tmp_path):
    render = _file(tmp_path / RENDERS / "a.jpg", 90)
    export = _file(tmp_path / "abc" / "coco.json", 90)
    cleaner = TempCleaner(tmp_path)  # the defaults `box2mask annotate` uses
    assert cleaner.clean() == [str(render)]
    assert export.exists() and (tmp_path / RENDERS).is_dir()
    os.utime(export, (time.time() - 400, time.time() - 400))
    assert cleaner.clean() == [str(export)]


def test_a_render_a_session_shows_is_kept_until_the_session_is_gone(tmp_path):
    shown = ShownFiles(per_owner=2)
    session, other = Session(), Session()
    renders = [_file(tmp_path / RENDERS / f"{i}.jpg", 3600) for i in range(4)]
    for path in renders[:3]:
        shown.show(session, path)  # the newest two count: a late event may carry the previous
    shown.show(other, renders[3])
    forgotten = []
    cleaner = TempCleaner(tmp_path, keep=shown.paths, forget=forgotten.extend)
    assert cleaner.clean() == [str(renders[0])] and forgotten == [str(renders[0])]
    del other
    gc.collect()
    assert cleaner.clean() == [str(renders[3])]
    assert renders[1].exists() and renders[2].exists()
    del session
    gc.collect()
    assert sorted(cleaner.clean()) == [str(renders[1]), str(renders[2])]


def test_the_cleaner_runs_in_the_background_and_removes_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    folder = own_temp_folder()
    assert os.environ["GRADIO_TEMP_DIR"] == str(folder) and folder.is_dir()
    stale = _file(folder / "x" / "render.jpg", 3600)
    cleaner = TempCleaner(folder, max_age_s=600, every_s=0.05)
    cleaner.start()
    deadline = time.time() + 10
    while stale.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not stale.exists()
    cleaner.stop(remove=True)
    assert not folder.exists()
