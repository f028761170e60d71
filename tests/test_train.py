"""The shared training loop: deterministic, resumable, and refusing a checkpoint of another config."""

import pytest
import torch

from genpercept_lib import models
from genpercept_lib.train import CheckpointMismatch, TrainConfig, lr_factor, step_generator, train


def regression_task(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def batch_fn(step):
        x = torch.randn(8, 4, generator=step_generator(0, step))
        return x, x @ w

    def loss_fn(m, batch, step):
        x, y = batch
        return torch.nn.functional.mse_loss(m(x), y)

    return model, batch_fn, loss_fn


def test_training_reduces_loss_and_is_deterministic():
    cfg = TrainConfig(steps=200, lr=3e-2, warmup_steps=5, final_lr_ratio=0.2)
    m1, batches, loss_fn = regression_task()
    h1 = train(m1, batches, loss_fn, cfg)
    m2, batches, loss_fn = regression_task()
    h2 = train(m2, batches, loss_fn, cfg)
    assert h1[-1]["loss"] < 0.3 * h1[0]["loss"]
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    cfg = TrainConfig(steps=40, lr=1e-2, warmup_steps=5, checkpoint_every=10)
    ref, batches, loss_fn = regression_task()
    ref_hist = train(ref, batches, loss_fn, cfg)

    m, batches, loss_fn = regression_task()
    train(m, batches, loss_fn, cfg, out_dir=tmp_path, stop_after=25)  # "killed" after 25 steps: last checkpoint at 20
    resumed, batches, loss_fn = regression_task(seed=123)  # a fresh process with different init: weights come from disk
    hist = train(resumed, batches, loss_fn, cfg, out_dir=tmp_path)
    assert len(hist) == 40 and hist[-1]["step"] == 40
    torch.testing.assert_close(hist[-1]["loss"], ref_hist[-1]["loss"], rtol=1e-6, atol=1e-7)
    for p, q in zip(resumed.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_resume_from_other_config_is_refused(tmp_path):
    m, batches, loss_fn = regression_task()
    train(m, batches, loss_fn, TrainConfig(steps=5, lr=1e-2), out_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match=r"another configuration \(differs in lr\)"):
        train(m, batches, loss_fn, TrainConfig(steps=5, lr=1e-3), out_dir=tmp_path)


def test_diffusers_model_checkpoint_is_safetensors(tmp_path):
    unet = models.build_unet("tiny", seed=0)
    cond = models.empty_text_embedding(unet, 2)

    def batch_fn(step):
        g = step_generator(0, step)
        return torch.randn(2, 4, 8, 8, generator=g)

    def loss_fn(m, z, step):
        return m(z, torch.tensor([1, 1]), encoder_hidden_states=cond).sample.pow(2).mean()

    train(unet, batch_fn, loss_fn, TrainConfig(steps=2, lr=1e-4), out_dir=tmp_path)
    assert (tmp_path / "checkpoint" / "model" / "diffusion_pytorch_model.safetensors").is_file()
    assert models.load_unet(tmp_path / "checkpoint" / "model").config.in_channels == 4


def test_non_finite_loss_is_an_error():
    m, batches, _ = regression_task()
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        train(m, batches, lambda *a: torch.tensor(float("nan"), requires_grad=True), TrainConfig(steps=3))


def test_lr_schedule_warmup_then_decay():
    cfg = TrainConfig(steps=100, warmup_steps=10, final_lr_ratio=0.01)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(0.01 ** 0.09)
    assert lr_factor(99, cfg) < lr_factor(50, cfg) < lr_factor(10, cfg)


# ---------------------------------------------------------------------------------------------------------
# several processes (accelerate launch): the same samples, the same effective batch
# ---------------------------------------------------------------------------------------------------------


def test_micro_batches_split_one_step_over_processes():
    from genpercept_lib.train import micro_batches

    assert micro_batches(3, 4) == [12, 13, 14, 15]
    split = [micro_batches(3, 4, num_processes=2, process_index=r) for r in range(2)]
    assert split == [[12, 14], [13, 15]]  # together exactly the single process's micro-batches
    with pytest.raises(ValueError, match="grad_accum=4 micro-batches per step cannot be split over 3 processes"):
        micro_batches(0, 4, num_processes=3)


def test_batches_reach_the_device_inside_dicts_tuples_and_dataclasses():
    from genpercept_lib.formulations import TrainingPair
    from genpercept_lib.train import to_device

    pair = TrainingPair(torch.zeros(1, dtype=torch.float64), torch.ones(1), torch.tensor([1]))
    moved = to_device({"pair": pair, "x": (torch.zeros(2), None), "name": "a"}, torch.device("meta"))
    assert moved["pair"].unet_input.is_meta and moved["x"][0].is_meta and moved["x"][1] is None
    assert moved["name"] == "a" and isinstance(moved["pair"], TrainingPair)


TWO_PROCESSES = r'''
import sys, torch
from accelerate import debug_launcher
sys.path.insert(0, sys.argv[2])
from test_train import regression_task
from genpercept_lib.train import TrainConfig, train

def main(out):
    model, batch_fn, loss_fn = regression_task()
    train(model, batch_fn, loss_fn, TrainConfig(steps=6, lr=1e-2, warmup_steps=2, grad_accum=2), out_dir=out)

debug_launcher(main, args=(sys.argv[1],), num_processes=2)
'''


def test_two_processes_train_the_same_model_as_one(tmp_path):
    """DDP on two CPU processes (gloo) with 1 micro-batch each = one process accumulating 2 micro-batches."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESSES)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "ddp"), str(Path(__file__).parent)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ref, batch_fn, loss_fn = regression_task()
    train(ref, batch_fn, loss_fn, TrainConfig(steps=6, lr=1e-2, warmup_steps=2, grad_accum=2), out_dir=tmp_path / "one")
    ddp = load_file(tmp_path / "ddp" / "checkpoint" / "model" / "model.safetensors")
    assert ddp.keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "ddp" / ".checkpoint.tmp").exists()  # one writer, swapped in completely


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback")
def test_mixed_precision_without_cuda_warns_and_trains_in_float32():
    m, batches, loss_fn = regression_task()
    with pytest.warns(RuntimeWarning, match="mixed_precision='bf16' needs a CUDA GPU; training in float32"):
        hist = train(m, batches, loss_fn, TrainConfig(steps=3, lr=1e-2, mixed_precision="bf16"))
    ref, batches, loss_fn = regression_task()
    ref_hist = train(ref, batches, loss_fn, TrainConfig(steps=3, lr=1e-2))  # float32 again in the same process
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]


def test_prefetching_batches_changes_nothing_but_the_waiting():
    from genpercept_lib.train import prefetched

    assert list(prefetched(lambda i: i * i, range(7), ahead=3)) == [i * i for i in range(7)]
    cfg = TrainConfig(steps=12, lr=1e-2, warmup_steps=2, grad_accum=2)
    m1, batches, loss_fn = regression_task()
    h1 = train(m1, batches, loss_fn, cfg)
    m2, batches, loss_fn = regression_task()
    h2 = train(m2, batches, loss_fn, cfg, prefetch=3)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]

    def broken(i):
        if i == 5:
            raise ValueError("sample 5: unreadable")
        return batches(i)

    m3, _, _ = regression_task()
    with pytest.raises(ValueError, match="sample 5: unreadable"):  # an error in the reader thread surfaces here
        train(m3, broken, loss_fn, cfg, prefetch=2)


@pytest.mark.parametrize("damage", ["weights", "state", "history"])
def test_a_broken_cached_checkpoint_is_rebuilt_with_a_notice(tmp_path, damage, capsys):
    """A truncated model file, trainer state or history: one notice naming it, then training from the start
    gives the same model as a clean run."""
    import json

    from genpercept_lib.train import TrainConfig, train

    def run(out):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        cfg = TrainConfig(steps=4, lr=1e-2, warmup_steps=1, checkpoint_every=2)
        hist = train(model, lambda i: torch.full((2, 3), float(i)), lambda m, b, s: m(b).pow(2).mean(), cfg,
                     out_dir=out, desc="tiny")
        return model, hist

    clean, hist = run(tmp_path / "clean")
    run(tmp_path / "broken")
    ckpt = tmp_path / "broken" / "checkpoint"
    target = {"weights": next((ckpt / "model").glob("*.safetensors")), "state": ckpt / "trainer_state.pt",
              "history": ckpt / "history.json"}[damage]
    target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size // 3)])
    again, hist_again = run(tmp_path / "broken")
    out = capsys.readouterr().out
    assert "notice:" in out and target.name in out and "again from the start" in out
    assert [h["loss"] for h in hist_again] == pytest.approx([h["loss"] for h in hist])
    assert torch.equal(again.weight, clean.weight)
    json.loads((ckpt / "history.json").read_text())  # rewritten whole


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_first_batch_is_built_before_the_progress_bar_starts(monkeypatch, prefetch):
    """Was: the first batch built the training set (minutes for pose) inside the bar's first step, so its ETA
    read hundreds of hours. Now the bar starts once a batch exists; the batches and the result are unchanged."""
    from genpercept_lib import train as train_mod

    built, seen = [], []
    model, batch_fn, loss_fn = regression_task()

    def counting(i):
        built.append(i)
        return batch_fn(i)

    def spy(*args, **kwargs):
        seen.append(len(built))
        return real(*args, **kwargs)

    real = train_mod.tqdm
    monkeypatch.setattr(train_mod, "tqdm", spy)
    cfg = TrainConfig(steps=6, lr=1e-2, warmup_steps=1)
    history = train(model, counting, loss_fn, cfg, prefetch=prefetch)
    assert seen and seen[0] >= 1 and built[:6] == list(range(6)) and len(history) == 6
    reference, _, _ = regression_task()
    assert [h["loss"] for h in train(reference, batch_fn, loss_fn, cfg)] == [h["loss"] for h in history]
    assert train(regression_task()[0], counting, loss_fn, cfg.__class__(steps=0, lr=1e-2)) == []  # nothing to do


def test_adam_is_fused_on_the_cpu_and_updates_as_the_plain_loop():
    from genpercept_lib.train import make_optimizer

    m1, batches, loss_fn = regression_task()
    m2, _, _ = regression_task()
    fused = make_optimizer(list(m1.parameters()), TrainConfig(lr=1e-2))
    plain = torch.optim.Adam(m2.parameters(), lr=1e-2, foreach=False)
    assert fused.defaults["fused"]
    for step in range(20):
        for m, opt in ((m1, fused), (m2, plain)):
            loss_fn(m, batches(step), step).backward()
            opt.step()
            opt.zero_grad()
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
