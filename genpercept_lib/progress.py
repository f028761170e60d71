"""Progress bars on every loop a person waits for: ``tqdm.auto`` in an interactive notebook or terminal, plain
text bars where there is no widget front end to show them (``GENPERCEPT_PROGRESS=text``, which
``genpercept reproduce`` sets for its kernels, so the executed notebooks in ``results/notebooks/`` end in a
readable final state instead of widgets stuck at 0 %).

Every redraw of a text bar is stored in the executed notebook, so text bars redraw at most every
``TEXT_INTERVAL_S`` seconds (and when they close), and a new postfix (the loss) waits for the next redraw.
Text bars stay on their line when they close (``leave=True``: the reader sees ``5/5`` and how long it took, not
the ``0/5`` of a bar cleared before its first redraw) and never move the cursor (``position=0``: a nested bar
ends its own line instead of writing terminal escapes a notebook cannot show)."""

from __future__ import annotations

import os

TEXT_INTERVAL_S = 10.0


def _choose():
    if os.environ.get("GENPERCEPT_PROGRESS") != "text":
        from tqdm.auto import tqdm

        return tqdm
    from tqdm.std import tqdm as std_tqdm

    class TextBar(std_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("mininterval", TEXT_INTERVAL_S)
            kwargs.update(leave=True, position=0)
            super().__init__(*args, **kwargs)

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

    return TextBar


tqdm = _choose()
