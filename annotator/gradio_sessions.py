"""Drop the component copies Gradio leaves in a browser session after each update.

Why: an event that returns `gr.update(choices=...)` makes Gradio build a new component for that
session (a Radio with the new choices); the copy gets an id of its own and is registered in the
session's `blocks_config.blocks`, its config in `config_values`, its temp-file set in the app's
`temp_file_sets`, and none is ever removed. The session shows the copy under the original id,
so the others are dead weight: every label list and image list update of a tab left open all
day adds one (found by annotator/memory_probe.py in the 8-user soak: ~2 MB a minute).
`drop_event_copies` is called at the start of each event, in that event's own session.

`SessionOwners`: Gradio finds a session by the hash the client sends, whoever is logged in, so a
second login that learnt a tab's hash could act on that tab's session (its selected label, its
undo history). The login that opened a session is recorded on page load; an event of another
login on it is refused before it runs.
"""

import threading
import weakref

from gradio.context import LocalContext

__all__ = ["SessionOwners", "drop_event_copies", "event_login"]


def event_login() -> str | None:
    """The login of the event being handled (None without --auth or outside an event)."""
    return getattr(LocalContext.request.get(None), "username", None)


class SessionOwners:
    """The login that opened each session object (forgotten when the object is collected)."""

    def __init__(self):
        self._owner: dict[int, str | None] = {}  # id(session) -> its login
        self._lock = threading.Lock()

    def claim(self, session) -> None:
        """Record the current event's login as the owner of `session` (on page load)."""
        key = id(session)
        with self._lock:
            if key not in self._owner:
                weakref.finalize(session, self._forget, key)
            self._owner[key] = event_login()

    def _forget(self, key: int) -> None:
        with self._lock:
            self._owner.pop(key, None)

    def check(self, session) -> None:
        """Raise PermissionError when the current event's login is not `session`'s owner."""
        with self._lock:
            if id(session) not in self._owner:
                return  # not opened by a page load (made in a test or a script)
            owner = self._owner[id(session)]
        login = event_login()
        if login != owner:
            raise PermissionError(
                f"this page was opened by another login, not {login!r}: open the annotator in "
                "your own browser tab"
            )


def drop_event_copies(demo) -> int:
    """Remove, from the session of the event being handled, the blocks whose ids are not the
    app's own (copies made by earlier updates); returns how many went. 0 outside an event."""
    config = LocalContext.blocks_config.get(None)
    request = LocalContext.request.get(None)
    if config is None:
        return 0
    extra = [key for key in config.blocks if key not in demo.blocks]
    if not extra:
        return 0
    session_hash = getattr(request, "session_hash", None)
    holder = getattr(demo, "state_holder", None)
    session = holder.session_data.get(session_hash) if holder is not None else None
    gone = set()
    for key in extra:
        block = config.blocks.pop(key, None)
        if session is not None:
            session.config_values.pop(key, None)
        if block is not None and hasattr(block, "temp_files"):
            gone.add(id(block.temp_files))
    if gone:
        demo.temp_file_sets[:] = [s for s in demo.temp_file_sets if id(s) not in gone]
    return len(extra)
