"""Text progress bars (executed notebooks) redraw rarely: every redraw is stored in the notebook."""

import importlib
import io

from genpercept_lib import progress


def test_text_bars_redraw_rarely_and_end_complete(monkeypatch):
    monkeypatch.setenv("GENPERCEPT_PROGRESS", "text")
    text = importlib.reload(progress)
    try:
        out = io.StringIO()
        bar = text.tqdm(range(500), desc="train", file=out)
        for i in bar:
            if i % 10 == 0:
                bar.set_postfix(loss=1.0 / (i + 1))
        draws = [d for d in out.getvalue().split("\r") if d.strip()]
        assert len(draws) <= 3, draws  # the start, perhaps one interval, the end: not one per step or postfix
        assert "500/500" in draws[-1]
        assert hasattr(text.tqdm, "write")
    finally:
        monkeypatch.delenv("GENPERCEPT_PROGRESS")
        importlib.reload(progress)
