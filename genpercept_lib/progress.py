"""Progress bars on every loop a person waits for: ``tqdm.auto`` in an interactive notebook or terminal, plain
text bars where there is no widget front end to show them (``GENPERCEPT_PROGRESS=text``, which
``genpercept reproduce`` sets for its kernels, so the executed notebooks in ``results/notebooks/`` end in a
readable final state instead of widgets stuck at 0 %)."""

from __future__ import annotations

import os


def _choose():
    if os.environ.get("GENPERCEPT_PROGRESS") == "text":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm


tqdm = _choose()
