"""Per-component and per-pipeline cost of GenPercept's inference (supplementary section 3, Table 1).

1. FLOPs at ``--flops-resolution`` (768, the paper's) on the meta device: exact, no weights, any machine,
   cross-checked against an independent count from module hooks (conv / linear / attention).
2. Wall time (median) and peak memory at ``--resolution`` on ``--device``, random weights.
3. Table 1's pipelines composed from the components.

    .venv/bin/python scripts/bench_runtime.py --resolution 256 --repeats 2 --threads 1
    .venv/bin/python scripts/bench_runtime.py --model tiny --resolution 64      # seconds on any laptop
    .venv/bin/python scripts/bench_runtime.py --device cuda --dtype fp16 --resolution 768 --repeats 10
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time

import torch

from genpercept_lib.apps import runtime
from genpercept_lib.profiles import get_profile

MIB = 1024**2


def fmt(x: float, spec: str) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else format(x, spec)


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    cells = [[fmt(row[c], spec) if spec else str(row[c]) for c, spec in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, (c, _) in enumerate(columns)]
    print("  ".join(c.ljust(w) for (c, _), w in zip(columns, widths)))
    for r in cells:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", help="profile giving the defaults below")
    parser.add_argument("--model", choices=("sd21", "tiny"), help="default: the profile's runtime_model")
    parser.add_argument("--resolution", type=int, help="timed resolution; default: the profile's")
    parser.add_argument("--flops-resolution", type=int, default=768, help="resolution of the meta FLOP count")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's choice); 1 is steadier on a shared machine")
    parser.add_argument("--no-timing", action="store_true", help="FLOPs only")
    parser.add_argument("--csv", help="write the component rows (timed resolution) here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    name = args.model or profile.runtime_model
    resolution = args.resolution or profile.runtime_resolution
    device, dtype = runtime.resolve_device(args.device, args.dtype)
    print(f"model {name} | hardware: {runtime.device_report(device)} | {dtype} | torch {torch.__version__}\n")

    # 1. FLOPs on meta at the paper's resolution, with the independent cross-check
    print(f"FLOPs per image at {args.flops_resolution}x{args.flops_resolution} (meta device)")
    meta_unet, meta_vae, meta_head = runtime.build_models(name, "meta")
    rows = runtime.flop_crosscheck(meta_unet, meta_vae, meta_head, args.flops_resolution)
    print_table(rows, [("component", ""), ("gflops", ".1f"), ("gflops_analytic", ".1f"),
                       ("rel_diff", "+.2e")])
    worst = max(abs(r["rel_diff"]) for r in rows)
    print(f"FlopCounterMode vs module-hook count: max relative difference {worst:.2e} "
          f"({'agree' if worst < 0.05 else 'DISAGREE'} within 5%)\n")
    meta_costs = runtime.component_costs(meta_unet, meta_vae, meta_head, args.flops_resolution,
                                         progress=False)
    print(f"Table 1 pipelines at {args.flops_resolution}x{args.flops_resolution} (FLOPs only)")
    print_table(runtime.table1_rows(meta_costs), [("setting", ""), ("gflops", ".0f")])
    if args.no_timing:
        return 0

    # 2. time and memory at the timed resolution
    start = time.perf_counter()
    unet, vae, head = runtime.build_models(name, device, dtype)
    print(f"built {name} on {device} in {time.perf_counter() - start:.1f} s; timing at "
          f"{resolution}x{resolution}, warm-up {args.warmup}, median of {args.repeats}")
    costs = runtime.component_costs(unet, vae, head, resolution, device, args.warmup, args.repeats)
    comp_rows = [{"component": c, "gflops": v["flops"] / 1e9, "seconds": v["seconds"],
                  "peak_mib": v["peak_bytes"] / MIB, "weights_mib": v["weight_bytes"] / MIB}
                 for c, v in costs.items()]
    print_table(comp_rows, [("component", ""), ("gflops", ".2f"), ("seconds", ".3f"), ("peak_mib", ".0f"),
                            ("weights_mib", ".0f")])

    # 3. pipelines
    print(f"Table 1 pipelines at {resolution}x{resolution} on this machine")
    print_table(runtime.table1_rows(costs), [("setting", ""), ("gflops", ".1f"), ("inference_time_s", ".2f"),
                                             ("memory_gb", ".2f")])
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[*comp_rows[0], "resolution", "model", "hardware"])
            writer.writeheader()
            for row in comp_rows:
                writer.writerow({**row, "resolution": resolution, "model": name,
                                 "hardware": runtime.device_report(device)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
