"""Wall time, peak memory and FLOPs per image, per component and per pipeline (Table 1, supp. section 3).

Components, each measured alone at batch size 1 (= per image):

=================  =====================================================================
``vae_encode``     z = E(x), [1, 3, H, W] -> [1, 4, H/8, W/8]
``unet_step``      one U-Net evaluation with its output layers (conv_norm_out, conv_out)
``unet_features``  the U-Net up to its last up block, as the DPT head uses it (no conv_out)
``vae_decode``     x = D(z), [1, 4, h, w] -> [1, 3, 8h, 8w]
``dpt_head``       the DPT neck + head on the decoder features, -> [1, 1, H, W]
=================  =====================================================================

The pipelines of Table 1 are sums of these (``PIPELINES``): with ensemble size E and S denoising steps,
stochastic multi-step = encode + E*S*unet_step + E*decode (the ensembling itself, a small CPU
optimisation, is not counted); w/o ensemble and deterministic multi-step = encode + S*unet_step + decode;
one-step = encode + unet_step + decode; one-step + DPT head = encode + unet_features + dpt_head.

How each number is taken:

* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmul, conv and attention kernels; one
  multiply-add = 2 FLOPs; norms, activations, interpolation not counted). It needs only shapes, so
  models built under ``torch.device("meta")`` give the exact 768x768 SD2.1 counts on any machine.
  PyTorch's CPU attention kernel has no formula in the counter; we register the standard one so CPU,
  CUDA and meta counts agree. ``analytic_flops`` is an independent count (module hooks on Conv2d,
  Linear and attention) used to cross-check.
* Time: ``warmup`` untimed calls, then the median of ``repeats`` timed calls, with
  ``torch.cuda.synchronize`` around each on GPU.
* Memory: the peak *above the level at the call* (activations and workspace; the weights, already
  resident, are counted separately with ``weight_bytes``). On CUDA: ``max_memory_allocated`` after
  ``reset_peak_memory_stats``. On CPU: the kernel's peak resident set (VmHWM in /proc/self/status),
  reset to the current RSS by writing "5" to /proc/self/clear_refs just before the call (after glibc's
  ``malloc_trim`` has returned freed heap pages, which would otherwise hide a repeated peak); where that
  file is not writable, a psutil thread samples RSS every millisecond (a lower bound on short peaks).
  ``ru_maxrss`` is not used: it is the peak over the whole process life and cannot be reset.
  A pipeline's memory = the weights of the modules it uses + the largest activation peak among its
  components (they run one after another).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..cache import REPO_ROOT
from ..heads import DPTHead, unet_decoder_features
from ..models import (
    build_unet,
    build_vae,
    decode,
    empty_text_embedding,
    encode,
    resolve_device,  # noqa: F401 (runtime.resolve_device: notebook 03, scripts)
)
from ..progress import tqdm
from ..results import cpu_model_name

COMPONENTS = ("vae_encode", "unet_step", "unet_features", "vae_decode", "dpt_head")
CLIP_TEXT_LEN = 2  # GenPercept conditions on the unpadded CLIP embedding of "": <|startoftext|> <|endoftext|>
GIB = 1024**3

# --------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------


def _sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """QK^T and AV of fused attention: the same formula torch uses for its CUDA kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_flop_formulas() -> dict:
    """Attention kernels FlopCounterMode does not know in this torch version (CPU fused SDPA)."""
    names = ("_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_fused_attention_overrideable")
    ops = [getattr(torch.ops.aten, n) for n in names if hasattr(torch.ops.aten, n)]
    return {op: _sdpa_flop for op in ops}


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` (2 per multiply-add), run under no_grad; works on meta tensors."""
    counter = FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas())
    with counter, torch.no_grad():
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def _attention_class():
    from diffusers.models.attention_processor import Attention

    return Attention


def analytic_flops(model: torch.nn.Module, fn: Callable, *args, **kwargs) -> int:
    """An independent FLOP count of ``fn`` from forward hooks on ``model``'s submodules.

    Conv2d: 2 * out.numel() * C_in/groups * k_h * k_w; Linear: 2 * out.numel() * in_features;
    attention core (diffusers ``Attention``): QK^T and AV, 2 * 2 * B * L_q * L_k * inner_dim.
    """
    attention = _attention_class()
    total = [0]

    def conv_hook(m, args, out):
        total[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, args, out):
        total[0] += 2 * out.numel() * m.in_features

    def attention_hook(m, args, kwargs, out):
        x = args[0] if args else kwargs["hidden_states"]  # [B, L, C] or [B, C, H, W]
        batch = x.shape[0]
        length_q = x.shape[1] if x.ndim == 3 else x.shape[2] * x.shape[3]
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        length_k = context.shape[1] if context is not None else length_q
        total[0] += 4 * batch * length_q * length_k * m.inner_dim

    handles = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, attention):
            handles.append(m.register_forward_hook(attention_hook, with_kwargs=True))
    try:
        with torch.no_grad():
            fn(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return total[0]


# --------------------------------------------------------------------------------------------------
# device, time, memory
# --------------------------------------------------------------------------------------------------

def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def device_report(device: str | torch.device = "cpu") -> str:
    """A hardware label for results tables: the GPU name, or the CPU model and its usable cores."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model_name()} ({usable_cores()} cores, torch {torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], warmup: int = 1, repeats: int = 3,
            device: str | torch.device = "cpu") -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = torch.device(device)
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            _sync(dev)
            start = time.perf_counter()
            fn()
            _sync(dev)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def _can_reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") > 0


def _cpu_peak_clear_refs(fn: Callable[[], object]) -> int:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current VmRSS
    before = _status_kib("VmRSS")
    fn()
    return max(0, _status_kib("VmHWM") - before) * 1024


def _cpu_peak_sampled(fn: Callable[[], object], interval_s: float = 1e-3) -> int:
    try:
        import psutil
    except ImportError:
        raise RuntimeError("peak CPU memory needs /proc/self/clear_refs (Linux) or psutil") from None

    proc, peak, done = psutil.Process(), [0], threading.Event()
    before = proc.memory_info().rss

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(0, max(peak[0], proc.memory_info().rss) - before)


def _release_free_heap(collect: bool = True) -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``): RSS before a call = what is in use."""
    if collect:  # cyclic garbage holding tensors (a full collection takes ~0.2 s with torch loaded)
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory(fn: Callable[[], object], device: str | torch.device = "cpu", collect: bool = True) -> int:
    """Peak bytes ``fn()`` uses above what was in use when it was called (see the module docstring).

    ``collect=False`` skips the garbage collection before the call (for a caller that just ran one).
    """
    dev = torch.device(device)
    _release_free_heap(collect)
    with torch.no_grad():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
            fn()
            torch.cuda.synchronize(dev)
            return torch.cuda.max_memory_allocated(dev) - before
        if _can_reset_hwm():
            return _cpu_peak_clear_refs(fn)
        return _cpu_peak_sampled(fn)


def weight_bytes(*modules: torch.nn.Module | None) -> int:
    """Bytes of parameters and buffers of the given modules (distinct tensors counted once)."""
    seen, total = set(), 0
    for module in modules:
        if module is None:
            continue
        for t in [*module.parameters(), *module.buffers()]:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------------------------------
# components and pipelines
# --------------------------------------------------------------------------------------------------


def component_calls(unet, vae, head: DPTHead | None, resolution: int | tuple[int, int],
                    text_len: int = CLIP_TEXT_LEN, timestep: int = 999) -> dict[str, Callable[[], object]]:
    """Zero-argument callables, one per component, on inputs of one image at ``resolution``.

    Inputs live on the U-Net's device and dtype (meta included). The DPT head's input features are
    computed once here, so timing the head does not time the U-Net again.
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    p = next(unet.parameters())
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    image = torch.zeros(1, 3, height, width, device=p.device, dtype=p.dtype)  # [1, 3, H, W]
    latent = torch.zeros(1, vae.config.latent_channels, height // factor, width // factor,
                         device=p.device, dtype=p.dtype)  # [1, 4, h, w]
    sample = torch.zeros(1, unet.config.in_channels, *latent.shape[-2:], device=p.device, dtype=p.dtype)
    text = empty_text_embedding(unet, 1, text_len)  # [1, L, D]
    t = torch.tensor(timestep, device=p.device)
    calls = {
        "vae_encode": lambda: encode(vae, image),
        "unet_step": lambda: unet(sample, t, text).sample,
        "unet_features": lambda: unet_decoder_features(unet, sample, t, text),
        "vae_decode": lambda: decode(vae, latent),
    }
    if head is not None:
        with torch.no_grad():
            features = unet_decoder_features(unet, sample, t, text)[::-1]  # fine -> coarse
        calls["dpt_head"] = lambda: head(features)
    return calls


def build_models(name: str = "sd21", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(unet, vae, head) with random weights for cost studies (``Profile.runtime_model`` names the config).

    The head is the SD2.1 release layout for "sd21", else ``DPTHead.for_unet``. ``device="meta"`` builds
    shapes only, instantly, for FLOP counts.
    """
    with torch.device(device):
        unet, vae = build_unet(name), build_vae(name)
        head = DPTHead() if name == "sd21" else DPTHead.for_unet(unet)
    if dtype != torch.float32:  # diffusers logs a notice on every .to(dtype), even a no-op one
        unet, vae, head = unet.to(dtype), vae.to(dtype), head.to(dtype)
    return unet.eval(), vae.eval(), head.eval()


def flop_crosscheck(unet, vae, head: DPTHead | None, resolution: int | tuple[int, int],
                    text_len: int = CLIP_TEXT_LEN) -> list[dict[str, float | str]]:
    """Per component: FlopCounterMode vs the module-hook count (``analytic_flops``) and their relative gap."""
    models = {"vae_encode": vae, "unet_step": unet, "unet_features": unet, "vae_decode": vae,
              "dpt_head": head}
    rows = []
    for name, call in component_calls(unet, vae, head, resolution, text_len).items():
        counted, analytic = count_flops(call), analytic_flops(models[name], call)
        rows.append({"component": name, "gflops": counted / 1e9, "gflops_analytic": analytic / 1e9,
                     "rel_diff": analytic / counted - 1})
    return rows


def component_weights(unet, vae, head: DPTHead | None) -> dict[str, int]:
    """Resident weight bytes each component needs (encoder and decoder halves of the VAE apart)."""
    out = {
        "vae_encode": weight_bytes(vae.encoder, getattr(vae, "quant_conv", None)),
        "unet_step": weight_bytes(unet),
        "unet_features": weight_bytes(unet),
        "vae_decode": weight_bytes(vae.decoder, getattr(vae, "post_quant_conv", None)),
    }
    if head is not None:
        out["dpt_head"] = weight_bytes(head)
    return out


def component_costs(unet, vae, head: DPTHead | None, resolution: int | tuple[int, int],
                    device: str | torch.device | None = None, warmup: int = 1, repeats: int = 3,
                    measure: bool = True, text_len: int = CLIP_TEXT_LEN, progress: bool = True
                    ) -> dict[str, dict[str, float]]:
    """Per-image cost of each component: {name: {flops, seconds, peak_bytes, weight_bytes}}.

    The models must already be on ``device`` in the wanted dtype (``resolve_device``). With models on
    the meta device, or ``measure=False``, only FLOPs and weights are filled (seconds, peak_bytes = nan).
    """
    dev = torch.device(device) if device is not None else next(unet.parameters()).device
    measure = measure and dev.type != "meta"
    calls = component_calls(unet, vae, head, resolution, text_len)
    weights = component_weights(unet, vae, head)
    gc.collect()  # once: the components' own garbage is freed by reference counting
    costs = {}
    for name, call in tqdm(calls.items(), desc=f"components @ {resolution}", disable=not progress):
        costs[name] = {
            "flops": float(count_flops(call)),
            "seconds": time_fn(call, warmup, repeats, dev) if measure else float("nan"),
            "peak_bytes": float(peak_memory(call, dev, collect=False)) if measure else float("nan"),
            "weight_bytes": float(weights[name]),
        }
    return costs


# Table 1's settings (names as in data/paper table1_runtime.csv) -> component multiplicities.
PIPELINES: dict[str, Callable[[int, int], dict[str, int]]] = {
    "Stochastic Multi-step Generation (w. ensemble)":
        lambda steps, ensemble: {"vae_encode": 1, "unet_step": ensemble * steps, "vae_decode": ensemble},
    "Stochastic Multi-step Generation (w/o ensemble)":
        lambda steps, ensemble: {"vae_encode": 1, "unet_step": steps, "vae_decode": 1},
    "Deterministic Multi-step Generation":
        lambda steps, ensemble: {"vae_encode": 1, "unet_step": steps, "vae_decode": 1},
    "Deterministic One-step Inference (Ours)":
        lambda steps, ensemble: {"vae_encode": 1, "unet_step": 1, "vae_decode": 1},
    "Deterministic One-step Inference + DPT head (Ours)":
        lambda steps, ensemble: {"vae_encode": 1, "unet_features": 1, "dpt_head": 1},
}
# (ensemble, steps) of each setting in Table 1
TABLE1_SETTINGS = {
    "Stochastic Multi-step Generation (w. ensemble)": (10, 10),
    "Stochastic Multi-step Generation (w/o ensemble)": (1, 10),
    "Deterministic Multi-step Generation": (1, 10),
    "Deterministic One-step Inference (Ours)": (1, 1),
    "Deterministic One-step Inference + DPT head (Ours)": (1, 1),
}
_SHARED_WEIGHTS = {"unet_features": "unet_step"}  # the same module: count its weights once


def pipeline_counts(pipeline: str, steps: int, ensemble: int) -> dict[str, int]:
    """How many times each component runs per image in ``pipeline``."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}: expected one of {list(PIPELINES)}")
    return PIPELINES[pipeline](steps, ensemble)


def pipeline_cost(costs: dict[str, dict[str, float]], pipeline: str, steps: int = 10, ensemble: int = 10
                  ) -> dict[str, float]:
    """Per-image totals of ``pipeline`` from ``component_costs``: flops and seconds add up; memory is
    the weights of the modules used plus the largest activation peak among the components."""
    counts = pipeline_counts(pipeline, steps, ensemble)
    missing = [name for name in counts if name not in costs]
    if missing:
        raise ValueError(f"pipeline {pipeline!r} needs component costs for {missing}")
    weight_keys = {_SHARED_WEIGHTS.get(name, name): costs[name]["weight_bytes"] for name in counts}
    return {
        "flops": sum(n * costs[name]["flops"] for name, n in counts.items()),
        "seconds": sum(n * costs[name]["seconds"] for name, n in counts.items()),
        "memory_bytes": sum(weight_keys.values()) + max(costs[name]["peak_bytes"] for name in counts),
    }


def table1_rows(costs: dict[str, dict[str, float]], settings: dict[str, tuple[int, int]] | None = None
                ) -> list[dict[str, float | int | str]]:
    """Rows shaped like the paper's table1_runtime.csv: setting, ensemble, denoise_steps, gflops,
    inference_time_s, memory_gb (GiB). ``settings`` maps names of ``PIPELINES`` to (ensemble, steps);
    the paper's by default. Settings whose components are missing from ``costs`` are skipped."""
    rows = []
    for name, (ensemble, steps) in (settings or TABLE1_SETTINGS).items():
        if not all(c in costs for c in pipeline_counts(name, steps, ensemble)):
            continue
        total = pipeline_cost(costs, name, steps, ensemble)
        rows.append({
            "setting": name, "ensemble": ensemble, "denoise_steps": steps,
            "gflops": total["flops"] / 1e9, "inference_time_s": total["seconds"],
            "memory_gb": total["memory_bytes"] / GIB,
        })
    return rows


# --- how fast this host is, for budgets in reference-host minutes -----------------------------------------------
TOY_SD_UNET = REPO_ROOT / "data" / "toy_sd" / "unet" / "config.json"  # the shipped toy SD's U-Net architecture
BENCHMARK = "the toy SD's U-Net architecture, 10 training steps, batch 8, 16 x 16 latents, one thread (median of 3)"


def host_benchmark(steps: int = 10, repeats: int = 3) -> float:
    """Seconds for ``steps`` training steps of the toy SD's U-Net (``BENCHMARK``): a fixed measure of a CPU on the work
    the default profile spends its time on, so a run's minutes can be put in reference-host minutes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        unet = build_unet(json.loads(TOY_SD_UNET.read_text()), seed=0)  # the default's architecture, random weights
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 4, 16, 16, generator=g)  # [B, 4, h, w]
        t = torch.full((8,), 999, dtype=torch.int64)
        cond = empty_text_embedding(unet, 8)  # [B, 1, D]
        opt = torch.optim.Adam(unet.parameters(), lr=1e-4)

        def run(n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                unet(x, t, encoder_hidden_states=cond).sample.square().mean().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return time.perf_counter() - t0

        run(2)  # first calls allocate
        return round(statistics.median(run(steps) for _ in range(repeats)), 3)
    finally:
        torch.set_num_threads(before)


def reference_minutes(wall_seconds: float, benchmark_seconds: float, reference_seconds: float) -> float:
    """A run's wall time in the minutes it would take on the reference host: wall x (reference / this host's
    benchmark seconds); a host twice as slow on the benchmark has its minutes halved."""
    return round(wall_seconds / 60 * reference_seconds / benchmark_seconds, 1)
