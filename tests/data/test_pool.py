"""The on-disk cache: an entry one process builds, another waits for (pool.cache_lock)."""

import subprocess
import sys
import time

from genpercept_lib.data import pool

HOLD = """
import sys, time
from genpercept_lib.data import pool
with pool.cache_lock(sys.argv[1], "the test entry"):
    print("holding", flush=True)
    time.sleep(2.0)
"""


def test_a_second_process_waits_for_the_entry_and_says_so(tmp_path, capsys):
    entry = tmp_path / "finetune" / "model-abc"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(entry)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    t0 = time.perf_counter()
    with pool.cache_lock(entry, "the model X"):
        waited = time.perf_counter() - t0
    holder.wait(timeout=30)
    assert waited > 1.0  # it waited for the holder to let go
    assert "waiting for another process that builds the model X" in capsys.readouterr().out


def test_an_entry_nobody_builds_is_taken_at_once_and_quietly(tmp_path, capsys):
    t0 = time.perf_counter()
    with pool.cache_lock(tmp_path / "entry", "it"):
        with pool.cache_lock(tmp_path / "other", "that"):  # another entry: no wait
            pass
    assert time.perf_counter() - t0 < 1.0 and capsys.readouterr().out == ""
