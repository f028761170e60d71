"""What one fine-tuning step costs on this CPU, and what our training loop adds to it (issue: spend the CPU on
learning). Writes one row per setting to --out (default data/step_benchmark.csv).

    python scripts/bench_step.py [--prior data/toy_sd] [--batches 8 16 32] [--threads 1 2] [--compile]

For each batch size and thread count: the one-step fine-tuning model (the prior's U-Net, RGB latent in, label
latent out, eq. (8)-(9)) trained on the same precomputed latent batches, (a) by ``genpercept_lib.train.train``
(accelerate, the lr schedule, gradient clipping, history, progress bar) and (b) by a bare PyTorch loop with the
same optimizer, clipping and schedule. ``--channels-last`` and ``--compile`` add those variants of (b).
Columns: ms per step and samples per second (medians of ``--repeats`` timed runs of ``--steps`` steps after a
warm-up), and ``overhead`` = ours / bare - 1.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from genpercept_lib import models, results
from genpercept_lib import prior as prior_lib
from genpercept_lib.train import TrainConfig, lr_factor, make_optimizer, train

WARMUP = 5


def latent_batches(unet, batch: int, n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    shape = (batch, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    return [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in range(n)]


def one_step_loss(model, batch, cond):
    z_x, target = batch  # [B, 4, h, w] each: the RGB latent in, -z(y) out (eq. (9))
    t = torch.full((len(z_x),), 999, dtype=torch.int64)
    return torch.nn.functional.mse_loss(model(z_x, t, encoder_hidden_states=cond).sample, target)


def ours(unet, batches, steps, cond) -> float:
    config = TrainConfig(steps=steps, lr=1e-3, warmup_steps=1, seed=0)
    t0 = time.perf_counter()
    train(unet, lambda i: batches[i % len(batches)], lambda m, b, s: one_step_loss(m, b, cond), config, desc="ours")
    return (time.perf_counter() - t0) / steps


def bare(unet, batches, steps, cond) -> float:
    config = TrainConfig(steps=steps, lr=1e-3, warmup_steps=1, seed=0)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = make_optimizer(params, config)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config))
    unet.train()
    t0 = time.perf_counter()
    for step in range(steps):
        loss = one_step_loss(unet, batches[step % len(batches)], cond)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    return (time.perf_counter() - t0) / steps


def fresh(base, channels_last=False, compiled=False):
    unet = models.build_unet(dict(base.config), seed=None)
    unet.load_state_dict(base.state_dict())
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if compiled:
        unet = torch.compile(unet)
    return unet


def timed(fn, base, batches, steps, repeats, cond, **variant) -> float:
    unet = fresh(base, **variant)
    fn(unet, batches, WARMUP, cond)  # first calls (and a compile) outside the clock
    return statistics.median(fn(unet, batches, steps, cond) for _ in range(repeats))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", type=Path, default=prior_lib.SHIPPED)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("-o", "--out", type=Path, default=Path("data/step_benchmark.csv"))
    args = p.parse_args(argv)
    base = prior_lib.load_shipped(args.prior).unet
    cpu = results.cpu_model_name()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            batches = latent_batches(base, batch)
            cond = models.empty_text_embedding(base, batch)  # [B, 1, D]
            variants = {"ours": (ours, {}), "bare": (bare, {})}
            if args.channels_last:
                variants["bare_channels_last"] = (bare, {"channels_last": True})
            if args.compile:
                variants["bare_compiled"] = (bare, {"compiled": True})
            times = {k: timed(fn, base, batches, args.steps, args.repeats, cond, **kw)
                     for k, (fn, kw) in variants.items()}
            for loop, sec in times.items():
                rows.append({"loop": loop, "batch": batch, "threads": threads, "ms_per_step": round(1000 * sec, 1),
                             "samples_per_s": round(batch / sec, 1), "overhead": round(sec / times["bare"] - 1, 3),
                             "grid": base.config.sample_size, "cpu": cpu})
                print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
