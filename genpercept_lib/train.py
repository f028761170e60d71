"""One training loop for every experiment: the toy-world prior and all fine-tuning runs.

Built on ``accelerate`` so the same loop runs on a laptop CPU and, with ``accelerate launch``, on several
GPUs with mixed precision and gradient accumulation (the ``paper`` profile). The loop is deliberately
generic: an experiment supplies

* ``batch_fn(index) -> batch``: a pure function of a micro-batch index (seeded inside), so an interrupted run
  resumed from a checkpoint sees exactly the batches the uninterrupted run would have seen;
* ``loss_fn(model, batch, step) -> scalar tensor``. The loop moves the batch's tensors (also inside dicts,
  lists and tuples) to the accelerator first.

``grad_accum`` counts micro-batches per optimizer step over *all* processes: optimizer step ``s`` averages
the gradients of micro-batches ``s * grad_accum ... s * grad_accum + grad_accum - 1``, and under
``accelerate launch`` with N processes process ``r`` computes every N-th of them (``grad_accum / N`` each).
One GPU and eight GPUs therefore train on the same samples with the same effective batch, and the config's
fingerprint (the checkpoint's identity) does not depend on the number of processes.

Checkpoints live in ``<out_dir>/checkpoint/``: the model in diffusers ``save_pretrained`` layout
(safetensors) and ``trainer_state.pt`` (optimizer, lr schedule, step, history, config fingerprint; loaded
with ``weights_only=True``). Resuming with a different config is refused with a one-line error.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from itertools import chain, islice
from pathlib import Path

import torch

from . import cache
from .cache import atomic_write_text, usual_modes
from .progress import tqdm


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 600
    lr: float = 3e-4
    warmup_steps: int = 50          # linear warm-up ...
    final_lr_ratio: float = 0.05    # ... then exponential decay to lr * final_lr_ratio at the last step
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"     # accelerate: "no" | "fp16" | "bf16"
    checkpoint_every: int = 0       # 0: only at the end
    seed: int = 0
    log_every: int = 10
    tag: str = ""                   # free text that is part of the fingerprint (e.g. the experiment name)

    def fingerprint(self) -> str:
        keys = {k: v for k, v in asdict(self).items() if k not in ("checkpoint_every", "log_every")}
        return cache.key(keys, 12)


class CheckpointMismatch(ValueError):
    """A checkpoint written by a different configuration (one-line message)."""


def lr_factor(step: int, config: TrainConfig) -> float:
    """Warm-up then exponential decay (Marigold's IterExponential schedule), as a multiplier of ``lr``."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    return warm * config.final_lr_ratio ** (step / max(1, config.steps))


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, salt): batches and noise survive a resume."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + salt) % (2**63 - 1))


def _save_model(model, folder: Path) -> None:
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder)
    else:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")


def _load_model_weights(model, folder: Path) -> None:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BrokenCheckpoint(f"{folder}: no .safetensors weights in the checkpoint")
    state = {}
    for f in files:
        try:
            state.update(load_file(f))
        except Exception as err:  # a truncated file: safetensors raises its own error types
            raise BrokenCheckpoint(f"{f}: unreadable weights ({type(err).__name__})") from None
    model.load_state_dict(state)


def save_checkpoint(out_dir: Path, model, optimizer, scheduler, step: int, history: list, config: TrainConfig):
    """Write the checkpoint into a temporary folder, then swap it in (a crash never leaves half of one)."""
    final, tmp = out_dir / "checkpoint", out_dir / ".checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_model(model, tmp / "model")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "fingerprint": config.fingerprint()}, tmp / "trainer_state.pt")
    atomic_write_text(tmp / "history.json", json.dumps({"config": asdict(config), "history": history}) + "\n")
    usual_modes(tmp)  # safetensors writes 0600: the checkpoint gets the mode the results get (0644 usually)
    old = out_dir / ".checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


class BrokenCheckpoint(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt): one line naming it."""


def load_checkpoint(out_dir: Path, model, optimizer, scheduler, config: TrainConfig) -> tuple[int, list]:
    """Restore model/optimizer/schedule from ``out_dir/checkpoint``; returns (next step, history).

    A file that cannot be read raises ``BrokenCheckpoint`` naming it; a checkpoint of another configuration
    raises ``CheckpointMismatch``."""
    folder = out_dir / "checkpoint"
    try:
        return _load_checkpoint(folder, model, optimizer, scheduler, config)
    except (CheckpointMismatch, BrokenCheckpoint):
        raise
    except Exception as err:  # torch.load, safetensors and json raise many types for a damaged file
        names = ("trainer_state.pt", "history.json", "model")
        culprit = next((folder / n for n in names if n in str(err)), folder)
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise BrokenCheckpoint(f"{culprit}: unreadable checkpoint ({type(err).__name__}: {reason})") from None


def _load_checkpoint(folder: Path, model, optimizer, scheduler, config: TrainConfig) -> tuple[int, list]:
    for name in ("trainer_state.pt", "history.json"):
        try:
            if name.endswith(".json"):
                json.loads((folder / name).read_text())
            else:
                state = torch.load(folder / name, map_location="cpu", weights_only=True)
        except Exception as err:
            reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise BrokenCheckpoint(f"{folder / name}: unreadable ({type(err).__name__}: {reason})") from None
    if state.get("fingerprint") != config.fingerprint():
        saved = json.loads((folder / "history.json").read_text()).get("config", {})
        skip = ("checkpoint_every", "log_every")
        diff = sorted(k for k, v in asdict(config).items() if saved.get(k) != v and k not in skip)
        raise CheckpointMismatch(
            f"{folder} was written by another configuration (differs in {', '.join(diff) or 'model/data'}): "
            f"delete it or use another output folder"
        )
    _load_model_weights(model, folder / "model")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    history = json.loads((folder / "history.json").read_text())["history"]
    return int(state["step"]), history


def to_device(batch, device):
    """Tensors of a batch (nested in dicts, lists, tuples; dataclasses of tensors) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    if is_dataclass(batch) and not isinstance(batch, type):
        return replace(batch, **{f.name: to_device(getattr(batch, f.name), device) for f in fields(batch)})
    return batch


def make_optimizer(params: list, config: TrainConfig) -> torch.optim.Adam:
    """Adam with its fused kernel (one call over all parameters) where torch has one for their device.

    The tiny toy models have ~250 small parameter tensors: the per-tensor loop of plain Adam took ~10 of a
    ~50 ms CPU step (measured on 2 cores); the fused kernel computes the same update (differences ~3e-7)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=config.lr, fused=fused or None)


def micro_batches(step: int, grad_accum: int, num_processes: int = 1, process_index: int = 0) -> list[int]:
    """The micro-batch indices one process computes for optimizer step ``step`` (see the module docstring)."""
    if grad_accum % num_processes:
        raise ValueError(f"grad_accum={grad_accum} micro-batches per step cannot be split over {num_processes} "
                         f"processes: expected a multiple of {num_processes}")
    return list(range(step * grad_accum + process_index, (step + 1) * grad_accum, num_processes))


def prefetched(fn: Callable[[int], object], indices: Iterable[int], ahead: int = 0) -> Iterator:
    """``fn(i)`` for each index in order, computed up to ``ahead`` indices early in one background thread."""
    if ahead <= 0:
        yield from (fn(i) for i in indices)
        return
    it = iter(indices)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches") as pool:
        queue = deque(pool.submit(fn, i) for i in islice(it, ahead))
        try:
            while queue:
                future = queue.popleft()
                following = next(it, None)
                if following is not None:
                    queue.append(pool.submit(fn, following))
                yield future.result()
        finally:
            for future in queue:
                future.cancel()


def train(
    model: torch.nn.Module,
    batch_fn: Callable[[int], object],
    loss_fn: Callable[[torch.nn.Module, object, int], torch.Tensor],
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = True,
    desc: str = "train",
    stop_after: int | None = None,
    parameters=None,
    prefetch: int = 0,
) -> list[dict]:
    """Fit ``model`` for ``config.steps`` optimizer steps; returns the history [{step, loss, lr}, ...].

    ``out_dir``: where checkpoints go (None: no checkpoints). ``stop_after``: end early after that many
    steps in this call, as if killed (tests use it to check that resuming gives the same result).
    ``prefetch``: build that many batches ahead in a background thread (real data read from disk), which
    changes nothing but the waiting: ``batch_fn`` is a pure function of the index.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    set_seed(config.seed)
    cuda = torch.cuda.is_available()
    state = PartialState(cpu=not cuda)
    micro_batches(0, config.grad_accum, state.num_processes)  # refuse an uneven split before any work
    precision = config.mixed_precision
    if precision != "no" and not cuda:
        warnings.warn(f"{desc}: mixed_precision={precision!r} needs a CUDA GPU; training in float32 on the CPU",
                      RuntimeWarning, stacklevel=2)
        precision = "no"
    if (AcceleratorState._shared_state and state.num_processes == 1
            and AcceleratorState().mixed_precision != precision):
        AcceleratorState._reset_state()  # accelerate keeps one precision per process; a notebook may train two
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum // state.num_processes,
                              mixed_precision=precision, cpu=not cuda,
                              step_scheduler_with_optimizer=False)  # we step it once per optimizer step: accelerate
                                                                    # would step it once per process
    main = accelerator.is_main_process
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    optimizer = make_optimizer(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    start, history = 0, []
    out = Path(out_dir) if out_dir is not None else None
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}  # a broken checkpoint restarts here
    if out is not None and resume and (out / "checkpoint").is_dir():
        try:
            start, history = load_checkpoint(out, model, optimizer, scheduler, config)
        except BrokenCheckpoint as err:  # it is a cache: say so, then train again from the start
            print(f"notice: {err}; training {desc} again from the start", flush=True)
            shutil.rmtree(out / "checkpoint", ignore_errors=True)
            model.load_state_dict(initial_state)
            optimizer = make_optimizer(params, config)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
            start, history = 0, []
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)
    running = None
    indices = (i for s in range(start, end)
               for i in micro_batches(s, config.grad_accum, accelerator.num_processes, accelerator.process_index))
    stream = prefetched(batch_fn, indices, prefetch)
    # the first batch may build the training set (sources.Lazy): outside the bar's clock, so its ETA is the steps'
    batches = chain([next(stream)] if end > start else [], stream)
    bar = tqdm(range(start, end), desc=desc, initial=start, total=config.steps,
               disable=not accelerator.is_local_main_process or start >= end, leave=False)  # no bar for a cached model
    for step in bar:
        for _ in range(config.grad_accum // accelerator.num_processes):
            batch = to_device(next(batches), accelerator.device)
            with accelerator.accumulate(model):
                loss = loss_fn(model, batch, step)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step}; the data or lr is broken")
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        scheduler.step()  # lr_factor counts optimizer steps, whatever the number of processes
        value = float(loss.detach())
        running = value if running is None else 0.9 * running + 0.1 * value
        history.append({"step": step + 1, "loss": value, "lr": scheduler.get_last_lr()[0]})
        if (step + 1) % config.log_every == 0 or step + 1 == end:
            bar.set_postfix(loss=f"{running:.4f}")
        done = step + 1
        if out is not None and config.checkpoint_every and done % config.checkpoint_every == 0 and done < end:
            if main:  # one writer; the others wait so that nobody runs ahead of a checkpoint being swapped in
                save_checkpoint(out, accelerator.unwrap_model(model), optimizer, scheduler, done, history, config)
            accelerator.wait_for_everyone()
    bar.close()
    stream.close()
    model = accelerator.unwrap_model(model)
    model.eval()
    if out is not None and history and end > start and main:
        save_checkpoint(out, model, optimizer, scheduler, history[-1]["step"], history, config)
    accelerator.wait_for_everyone()
    return history


def smooth(values, weight: float = 0.9) -> list[float]:
    """Exponential moving average for training-curve plots."""
    out, acc = [], None
    for v in values:
        acc = v if acc is None or math.isnan(acc) else weight * acc + (1 - weight) * v
        out.append(acc)
    return out
