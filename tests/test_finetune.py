"""Fine-tuning at smoke scale: every formulation trains, resume equals uninterrupted, bad data is masked."""

import numpy as np
import pytest
import torch

from genpercept_lib import evaluate, experiment, finetune, formulations, losses, models, profiles, sources, tasks
from genpercept_lib import prior as prior_lib
from genpercept_lib.data import toyworld
from genpercept_lib.spec import FinetuneSpec


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENPERCEPT_CACHE", str(root))
    cfg = profiles.get_profile("smoke").replace(prior_vae_steps=5, prior_unet_steps=5, train_steps=12)
    yield cfg, prior_lib.load_or_train_prior(cfg), mp
    mp.undo()


@pytest.mark.parametrize("formulation", ["stochastic", "deterministic", "one_step"])
def test_every_formulation_trains_and_evaluates(setup, formulation):
    cfg, prior, _ = setup
    spec = FinetuneSpec(formulation=formulation)
    unet, history = finetune.finetune(cfg, spec, prior)
    assert len(history) == cfg.train_steps and np.isfinite([h["loss"] for h in history]).all()
    assert unet.config.in_channels == (8 if formulation == "stochastic" else 4)
    df = experiment.run(cfg, prior, spec, ["toy_nyu"], settings=[(2, 1)])
    assert list(df.domain) == ["toy_nyu"] and list(df.dataset) == ["NYU"]
    assert 0 < df.AbsRel.iloc[0] < 5 and 0 <= df.delta1.iloc[0] <= 1


def test_killed_run_resumes_to_the_same_metrics(setup, tmp_path):
    cfg, prior, mp = setup
    spec = FinetuneSpec(formulation="one_step", seed=3)
    unet_ref, hist_ref = finetune.finetune(cfg, spec, prior)  # uninterrupted (cache A)
    ref = evaluate.evaluate(cfg, unet_ref, prior.vae, spec, ["toy_nyu"])
    mp.setenv("GENPERCEPT_CACHE", str(tmp_path))  # cache B: start over
    prior_b = prior_lib.load_or_train_prior(cfg)
    finetune.finetune(cfg, spec, prior_b, stop_after=7)  # killed after 7 of 12 steps (checkpoint at 6)
    unet, hist = finetune.finetune(cfg, spec, prior_b)  # resumed
    assert [h["loss"] for h in hist] == pytest.approx([h["loss"] for h in hist_ref], rel=1e-5)
    got = evaluate.evaluate(cfg, unet, prior_b.vae, spec, ["toy_nyu"])
    assert got.AbsRel.iloc[0] == pytest.approx(ref.AbsRel.iloc[0], rel=1e-5)


def test_a_different_lr_trains_a_new_model_instead_of_clashing(setup):
    cfg, prior, _ = setup
    spec = FinetuneSpec()
    a = finetune.finetune_folder(cfg, spec, prior)
    b = finetune.finetune_folder(cfg.replace(lr=cfg.lr / 2), spec, prior)
    assert a != b


def test_a_task_with_its_own_steps_trains_them(setup):
    """A task's own ``steps`` (``{"tasks": {"matting": {"steps": 7}}}``) give it its own budget (and its own cached
    model); the others keep train_steps; an explicit ``spec.steps`` wins over both."""
    cfg, prior, _ = setup
    own = profiles.with_overrides(cfg, {"tasks": {"matting": {"steps": 7}}})
    assert finetune.train_config(own, FinetuneSpec(task="matting"), prior).steps == 7
    assert finetune.train_config(own, FinetuneSpec(task="depth"), prior).steps == cfg.train_steps
    assert finetune.train_config(own, FinetuneSpec(task="matting", steps=3), prior).steps == 3
    spec = FinetuneSpec(task="matting")
    assert finetune.finetune_folder(own, spec, prior) != finetune.finetune_folder(cfg, spec, prior)
    with pytest.raises(profiles.ConfigError, match=r"^overrides: tasks.matting.steps=0: expected an integer >= 1"):
        profiles.with_overrides(cfg, {"tasks": {"matting": {"steps": 0}}})


def test_a_task_with_its_own_learning_rate_trains_with_it(setup):
    """A task's own ``lr`` gives it its own learning rate (and its own cached model); the others keep lr."""
    cfg, prior, _ = setup
    own = profiles.with_overrides(cfg, {"tasks": {"matting": {"lr": 1e-3}}})
    assert finetune.train_config(own, FinetuneSpec(task="matting"), prior).lr == 1e-3
    assert finetune.train_config(own, FinetuneSpec(task="depth"), prior).lr == cfg.lr
    spec = FinetuneSpec(task="matting")
    assert finetune.finetune_folder(own, spec, prior) != finetune.finetune_folder(cfg, spec, prior)
    assert finetune.finetune_folder(own, FinetuneSpec(), prior) == finetune.finetune_folder(cfg, FinetuneSpec(), prior)
    for bad in (0, 1.5, True, "fast"):
        with pytest.raises(profiles.ConfigError, match=r"^overrides: tasks.matting.lr=.*: expected a learning rate"):
            profiles.with_overrides(cfg, {"tasks": {"matting": {"lr": bad}}})


def test_nan_and_all_invalid_ground_truth_never_make_the_loss_nan(setup):
    cfg, prior, _ = setup
    spec = FinetuneSpec(formulation="one_step", pixel_loss=True)
    data = sources.training_latents(cfg, spec, prior.vae)
    data["valid"][0] = False  # an all-invalid image
    data["label_img"][1, :, :4] = float("nan")  # NaN in the decoded-space target
    data["z_y"][2] = float("inf")  # a broken latent target
    data["mask"][2] = False
    unet = finetune.initial_unet(spec, prior.unet)
    cond = torch.zeros(4, 1, unet.config.cross_attention_dim)
    _, loss_fn = finetune.make_loss(spec, prior.vae, None, sources.LatentSource(data), cond, seed=0)
    idx = torch.tensor([0, 1, 2, 3])  # the broken samples themselves
    batch = {k: data[k][idx] for k in sources.LatentSource.KEYS} | {"timesteps": None, "noise": None}
    pair = formulations.training_pair("one_step", batch["z_x"], batch["z_y"])
    assert not torch.isfinite(pair.target).all()
    loss = loss_fn(unet, batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in unet.parameters() if p.grad is not None)
    assert losses.masked_mse(torch.zeros(2), torch.tensor([float("nan"), float("nan")])).item() == 0.0


def test_bad_spec_values():
    with pytest.raises(ValueError, match="formulation='marigold': expected one of stochastic, deterministic, one_step"):
        FinetuneSpec(formulation="marigold")
    with pytest.raises(ValueError, match=r"fraction=0: expected a number in \(0, 1\]"):
        FinetuneSpec(fraction=0)
    assert set(sources.training_mix(FinetuneSpec(labels="reallike"))) == set(toyworld.REALLIKE_DOMAINS)


def test_cli_train_fills_the_cache_the_notebooks_read(setup, capsys):
    from genpercept_lib.apps import cli

    assert cli.main(["train", "--profile", "smoke", "--steps", "3", "--evaluate"]) == 0
    out = capsys.readouterr().out.splitlines()
    cfg = profiles.setup("smoke")
    spec = FinetuneSpec(steps=3)
    folder = finetune.finetune_folder(cfg, spec, prior_lib.load_or_train_prior(cfg))
    assert out[0].startswith("depth one_step: 3 steps, last loss ") and out[1] == str(folder)
    assert (folder / "checkpoint" / "model" / "config.json").is_file()
    assert "NYU" in "\n".join(out[2:]) and "AbsRel" in out[2]
    _, history = finetune.finetune(cfg, spec, prior_lib.load_or_train_prior(cfg))  # the notebook's call: cached
    assert len(history) == 3


@pytest.mark.parametrize("argv, words", [
    (["--formulation", "marigold"], "formulation='marigold': expected one of"),
    (["--steps", "0"], "--steps 0: expected >= 1"),
    (["--profile", "laptop"], "unknown profile 'laptop'"),
])
def test_cli_train_bad_input_is_one_line(argv, words, capsys):
    from genpercept_lib.apps import cli

    assert cli.main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_normals_train_with_the_authors_angular_pixel_loss(setup):
    """Was: pixel_loss=True on normals trained on the mean of the three channels (a depth loss)."""
    cfg, prior, _ = setup
    spec = FinetuneSpec(task="normal", pixel_loss=True)
    data = sources.training_latents(cfg, spec, prior.vae)
    unet = finetune.initial_unet(spec, prior.unet)
    cond = torch.zeros(4, 1, unet.config.cross_attention_dim)
    batch = {k: data[k][:4] for k in sources.LatentSource.KEYS} | {"timesteps": None, "noise": None}
    def loss(s):
        return finetune.make_loss(s, prior.vae, None, None, cond, seed=0)[1](unet, batch, 0)

    with_pixel, latent_only = loss(spec), loss(FinetuneSpec(task="normal"))
    from genpercept_lib.tasks.normal import angular_loss

    with torch.no_grad():
        z0 = -unet(batch["z_x"], torch.ones(4, dtype=torch.long), encoder_hidden_states=cond).sample
        decoded = prior.vae.decode(z0 / prior.vae.config.scaling_factor).sample
    expected = latent_only + angular_loss(decoded, batch["label_img"], batch["valid"])
    assert with_pixel.item() == pytest.approx(expected.item(), rel=1e-5)


def test_toy_training_mirrors_scenes_as_the_authors_lr_flip_p(setup):
    """Was: the toy world trained on the scenes as rendered while every authors' config (and the paper profile's
    stream) mirrors each sample with probability 0.5. The mirrored half is the flipped scene, its label mirrored
    by the task (normals: x -> -x), and each batch draws it with probability lr_flip_p."""
    cfg, prior, _ = setup
    assert cfg.lr_flip_p == 0.5
    for task in ("depth", "normal"):
        spec = FinetuneSpec(task=task)
        data = sources.training_latents(cfg, spec, prior.vae)
        plain = sources.training_latents(cfg.replace(lr_flip_p=0.0), spec, prior.vae)
        n = len(plain["z_x"])
        assert len(data["z_x"]) == 2 * n and torch.equal(data["z_x"][:n], plain["z_x"])
        assert torch.equal(data["label_img"][:n], plain["label_img"])
        mirrored = data["label_img"][n:]  # [N, 3, H, W]
        if task == "normal":
            assert torch.allclose(mirrored[:, 0], -plain["label_img"][:, 0].flip(-1))  # x points the other way
            assert torch.allclose(mirrored[:, 1:], plain["label_img"][:, 1:].flip(-1))
        else:
            assert torch.equal(mirrored, plain["label_img"].flip(-1))
        rgb = torch.from_numpy(sources.training_pool(cfg, spec)["rgb"][:2]).float() * 2 - 1  # [2, 3, H, W]
        assert torch.allclose(data["z_x"][n:n + 2], models_encode(prior.vae, rgb.flip(-1)), atol=1e-5)

    def drawn(p):
        src = sources.LatentSource({**sources.training_latents(cfg.replace(lr_flip_p=p), FinetuneSpec(), prior.vae)})
        idx = src.batch(torch.Generator().manual_seed(0), 4000)["z_x"]
        return (idx[:, None] == src.data["z_x"][None, src.n:]).flatten(2).all(-1).any(-1).float().mean().item()

    assert drawn(0.0) == 0.0  # (index >= n never drawn: no mirrored latent appears)
    assert 0.4 < drawn(0.5) < 0.6
    assert drawn(1.0) == 1.0


def models_encode(vae, x):
    return models.encode_batched(vae, x)


def test_the_image_blind_guess_is_the_mean_of_the_labels_training_saw_mirrored_scenes_included(setup):
    """Was: the image-blind guess averaged the scenes as rendered while training drew each one mirrored with
    probability lr_flip_p, so the guess kept a left-right bias the trained model never saw."""
    cfg, _, _ = setup
    for task, spec in (("depth", FinetuneSpec()), ("normal", FinetuneSpec(task="normal"))):
        plain_labels, plain_valid = experiment.training_labels(cfg.replace(lr_flip_p=0.0), spec)
        labels, valid = experiment.training_labels(cfg, spec)  # lr_flip_p = 0.5
        n = len(plain_labels)
        assert len(labels) == 2 * n and np.array_equal(labels[:n], plain_labels)
        assert np.array_equal(valid[n:], plain_valid[..., ::-1])
        flipped = plain_labels[..., ::-1].copy()
        if task == "normal":
            flipped[:, 0] = -flipped[:, 0]  # x points right: mirrored normals point the other way
        assert np.array_equal(labels[n:], flipped)
        only, _ = experiment.training_labels(cfg.replace(lr_flip_p=1.0), spec)
        assert np.array_equal(only, flipped)
        if task == "depth":  # the mean of both orientations is left-right symmetric; the scenes' own is not
            guess, before = (tasks.get("depth").image_blind(lab, ok) for lab, ok in ((labels, valid),
                                                                                       (plain_labels, plain_valid)))
            assert np.allclose(guess, guess[:, ::-1], atol=1e-6)
            assert not np.allclose(before, before[:, ::-1], atol=1e-3)


def test_lr_flip_p_keys_the_toy_models(setup):
    """(Pose mirrors its own crops: tests/pose/test_pose_pipeline.py.)"""
    cfg, prior, _ = setup
    depth = FinetuneSpec()
    plain = cfg.replace(lr_flip_p=0.0)
    assert finetune.finetune_folder(cfg, depth, prior) != finetune.finetune_folder(plain, depth, prior)
    assert "flip" not in finetune.train_config(plain, depth, prior).tag  # older models keep their key
    for bad in (-0.1, 1.5, True, "yes"):
        with pytest.raises(profiles.ConfigError, match="lr_flip_p"):
            profiles.with_overrides(cfg, {"lr_flip_p": bad})


def test_a_training_set_is_encoded_once_per_process_and_each_caller_gets_a_copy(setup, monkeypatch):
    """The models of a notebook that differ only in pipeline, beta, init or seed share one encoding."""
    cfg, prior, _ = setup
    calls = []
    real = sources.encode_training_set

    def counting(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(sources, "encode_training_set", counting)
    models._ENCODED.clear()
    a = sources.training_latents(cfg, FinetuneSpec(seed=0), prior.vae)
    a["z_x"].zero_()  # a caller that edits its copy (the NaN test above does) spoils nothing
    b = sources.training_latents(cfg, FinetuneSpec(formulation="stochastic", seed=2), prior.vae)
    assert len(calls) == 1 and not torch.equal(a["z_x"], b["z_x"])
    assert torch.equal(b["z_x"], real(cfg, FinetuneSpec(), prior.vae)["z_x"])
    sources.training_latents(cfg, FinetuneSpec(fraction=0.5), prior.vae)  # another training set
    sources.training_latents(cfg.replace(lr_flip_p=0.0), FinetuneSpec(), prior.vae)  # another profile
    other = prior_lib.load_or_train_prior(cfg).vae
    sources.training_latents(cfg.replace(lr_flip_p=0.0), FinetuneSpec(), copy_of(other))  # another VAE object
    assert len(calls) == 4


def copy_of(module):
    import copy

    return copy.deepcopy(module)


def test_the_grids_image_blind_panel_is_the_guess_the_table_scores(setup):
    """Notebook 07's grid draws ``image_blind_guesser``'s guess; the image-blind rows score the same guess."""
    cfg, _, _ = setup
    spec = FinetuneSpec()
    guess_for = experiment.image_blind_guesser(cfg, spec)
    item = evaluate.example(cfg, evaluate.eval_domains(cfg)[0], 0)
    labels, valid = experiment.training_labels(cfg, spec)
    assert np.array_equal(guess_for(item), tasks.get("depth").image_blind(labels, valid))
    domain = evaluate.eval_domains(cfg)[0]
    row = experiment.image_blind(cfg, spec, [domain])
    data = evaluate.eval_pool(cfg, domain)
    pairs = (({k: v[i] for k, v in data.items()}, guess_for({"rgb": data["rgb"][i]})) for i in range(len(data["rgb"])))
    assert row.AbsRel.iloc[0] == evaluate.scores(cfg, spec, domain, pairs)["AbsRel"]


def test_the_cpu_thread_count_keys_the_model(setup):
    """On a CPU, one and two threads train other weights: a model fine-tuned with one count is never served to a
    run with the other (scripts/levers.py's THREADS shares the notebooks' cache)."""
    cfg, prior, _ = setup
    before = torch.get_num_threads()
    try:
        folders = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            folders[n] = finetune.finetune_folder(cfg, FinetuneSpec(), prior)
            assert finetune.train_config(cfg, FinetuneSpec(), prior).tag.endswith(f"/threads-{n}")
    finally:
        torch.set_num_threads(before)
    assert folders[1] != folders[2]
