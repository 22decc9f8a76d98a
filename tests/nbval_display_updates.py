"""A pytest plugin for nbval (`make nbval` loads it with -p): in-place display updates are not "unhandled".

utils.progress draws each training bar as one display output that it updates in place (`update_display_data`,
the Jupyter message JupyterLab, Colab and nbclient apply, so that a saved notebook keeps the bar's final state).
nbval 0.11 has no branch for that message type: it prints "unhandled iopub msg: update_display_data" for every
update, hundreds per run, into each cell's captured output, where they bury a failing cell's traceback.

nbval never compares these updates (it keeps a cell's outputs as first displayed), so this plugin takes them
out of the kernel messages nbval reads, and only them: errors, streams (stderr too), displays, results and any
other message type reach nbval as before, and an unknown type is still printed by nbval.
"""
from __future__ import annotations

import pytest

SKIPPED = frozenset({"update_display_data"})


def _without_display_updates(get_message):
    """Wrap nbval's `get_kernel_message` so that it never returns an in-place display update."""
    def get_kernel_message(*args, **kwargs):
        while True:
            msg = get_message(*args, **kwargs)
            if msg.get("msg_type") not in SKIPPED:
                return msg
    get_kernel_message.nbval_display_updates = True
    return get_kernel_message


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    try:
        from nbval.plugin import IPyNbFile
    except ImportError:
        return
    for item in items:
        parent = getattr(item, "parent", None)
        if isinstance(parent, IPyNbFile) and not getattr(parent.get_kernel_message, "nbval_display_updates", False):
            parent.get_kernel_message = _without_display_updates(parent.get_kernel_message)
