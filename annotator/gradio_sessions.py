"""Drop the component copies Gradio leaves in a browser session after each update.

Why: an event that returns `gr.update(choices=...)` makes Gradio build a new component for that
session (a Radio with the new choices); the copy gets an id of its own and is registered in the
session's `blocks_config.blocks`, its config in `config_values`, its temp-file set in the app's
`temp_file_sets`, and none is ever removed. The session shows the copy under the original id,
so the others are dead weight: every label list and image list update of a tab left open all
day adds one (found by annotator/memory_probe.py in the 8-user soak: ~2 MB a minute).
`drop_event_copies` is called at the start of each event, in that event's own session.
"""

from gradio.context import LocalContext

__all__ = ["drop_event_copies"]


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
