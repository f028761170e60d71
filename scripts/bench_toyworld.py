"""Milliseconds per toy-world sample, per domain: ``python scripts/bench_toyworld.py [--size 64] [--n 20]``.

Renders scenes 0..n-1 of every domain (after a warm-up render per domain that pays for imports) and prints the
median, 90th percentile and worst time per sample. The target is well under 50 ms at 64 x 64.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from genpercept_lib.data import toyworld


def bench(size: int, n: int) -> dict[str, np.ndarray]:
    for domain in toyworld.DOMAINS:                                        # warm-up: lazy imports (scipy)
        toyworld.render(domain, 10_000, size)
    times = {}
    for domain in toyworld.DOMAINS:
        ms = []
        for index in range(n):
            t0 = time.perf_counter()
            toyworld.render(domain, index, size)
            ms.append((time.perf_counter() - t0) * 1e3)
        times[domain] = np.array(ms)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=toyworld.DEFAULT_SIZE)
    parser.add_argument("--n", type=int, default=20, help="scenes per domain")
    args = parser.parse_args(argv)
    times = bench(args.size, args.n)
    cpu = platform.processor() or platform.machine()
    print(f"toy world, {args.size}x{args.size}, {args.n} scenes per domain, {cpu}")
    print(f"{'domain':24s} {'median ms':>10s} {'p90 ms':>8s} {'max ms':>8s}")
    for domain, ms in times.items():
        print(f"{domain:24s} {np.median(ms):10.1f} {np.percentile(ms, 90):8.1f} {ms.max():8.1f}")
    every = np.concatenate(list(times.values()))
    print(f"{'all':24s} {np.median(every):10.1f} {np.percentile(every, 90):8.1f} {every.max():8.1f}")


if __name__ == "__main__":
    main()
