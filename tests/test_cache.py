"""The one on-disk cache (genpercept_lib/cache.py): keys, atomic entries, the lock one process builds under while
another waits, unreadable entries dropped."""

import subprocess
import sys
import time

from genpercept_lib import cache

HOLD = """
import sys, time
from genpercept_lib import cache
with cache.entry_lock(sys.argv[1], "the test entry"):
    print("holding", flush=True)
    time.sleep(2.0)
"""


def test_a_second_process_waits_for_the_entry_and_says_so(tmp_path, capsys):
    entry = tmp_path / "finetune" / "model-abc"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(entry)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    t0 = time.perf_counter()
    with cache.entry_lock(entry, "the model X"):
        waited = time.perf_counter() - t0
    holder.wait(timeout=30)
    assert waited > 1.0  # it waited for the holder to let go
    assert "waiting for another process that builds the model X" in capsys.readouterr().out


def test_an_entry_nobody_builds_is_taken_at_once_and_quietly(tmp_path, capsys):
    t0 = time.perf_counter()
    with cache.entry_lock(tmp_path / "entry", "it"):
        with cache.entry_lock(tmp_path / "other", "that"):  # another entry: no wait
            pass
    assert time.perf_counter() - t0 < 1.0 and capsys.readouterr().out == ""


def test_a_lock_holder_is_refused_at_once_when_asked_not_to_wait(tmp_path):
    import pytest

    entry = tmp_path / "entry"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(entry)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    t0 = time.perf_counter()
    with pytest.raises(cache.Locked, match=rf"^busy: process {holder.pid} holds it$"):
        with cache.file_lock(f"{entry}.lock", "waiting", refuse="busy: process {pid} holds it"):
            pass
    assert time.perf_counter() - t0 < 1.0  # refused, not waited
    holder.wait(timeout=30)


def test_a_cached_model_gets_the_mode_the_results_get(tmp_path):
    """safetensors writes its files 0600: a cached model was readable by its owner alone, results 0644."""
    import os

    from genpercept_lib import models

    unet = models.build_unet("tiny", seed=0)
    entry = tmp_path / "finetune" / "model-abc"
    old = os.umask(0o022)
    try:
        with cache.entry_lock(entry, "the model X"):
            unet.save_pretrained(entry)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in entry.iterdir()}
    assert modes == {"config.json": 0o644, "diffusion_pytorch_model.safetensors": 0o644}


def test_a_key_names_its_spec_and_the_cache_version(monkeypatch):
    spec = {"mix": "toy_nyu", "n": 4}
    assert cache.key(spec) == cache.key(dict(reversed(list(spec.items()))))  # order does not matter
    assert cache.key(spec) != cache.key({**spec, "n": 5}) and len(cache.key(spec, 10)) == 10
    before = cache.key(spec)
    monkeypatch.setattr(cache, "VERSION", cache.VERSION + 1)  # one bump retires every entry
    assert cache.key(spec) != before


def test_an_unreadable_entry_is_dropped_with_a_notice(tmp_path, capsys):
    import numpy as np

    path = tmp_path / "x.npz"
    assert cache.load_npz(path) is None  # none yet
    cache.save_npz(path, {"a": np.arange(3)})
    assert cache.load_npz(path)["a"].tolist() == [0, 1, 2]
    path.write_bytes(b"not a zip")
    assert cache.load_npz(path) is None and not path.exists()
    assert "unreadable" in capsys.readouterr().out
