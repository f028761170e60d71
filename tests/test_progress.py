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


def test_text_bars_end_complete_on_their_own_line_without_cursor_moves(monkeypatch):
    """A bar closed before its first redraw (an evaluation loop) still shows n/n; nested bars write no escapes."""
    monkeypatch.setenv("GENPERCEPT_PROGRESS", "text")
    text = importlib.reload(progress)
    try:
        out = io.StringIO()
        for _ in text.tqdm(range(3), desc="domains", file=out, leave=False):
            for _ in text.tqdm(range(4), desc="render", file=out, leave=False):
                pass
        written = out.getvalue()
        assert "\x1b" not in written
        lines = [line.split("\r")[-1] for line in written.split("\n") if line.split("\r")[-1].strip()]
        assert [line.split(":")[0] for line in lines] == ["render"] * 3 + ["domains"], lines
        assert "4/4" in lines[0] and "3/3" in lines[-1]
    finally:
        monkeypatch.delenv("GENPERCEPT_PROGRESS")
        importlib.reload(progress)
