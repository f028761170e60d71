"""The paper profile's real-data path, end to end on tiny fixtures: SD2.1's folder layout with tiny random
models, Hypersim / Virtual KITTI training files, the five depth benchmarks and DSINE's six normal benchmarks in
the layouts they ship in."""

import dataclasses

import numpy as np
import pytest
import torch

from genpercept_lib import evaluate, experiment, finetune, profiles, sources, stream, tasks
from genpercept_lib import prior as prior_lib
from genpercept_lib.data import readers
from genpercept_lib.spec import FinetuneSpec

try:
    from .data import reader_fixtures as fx
except ImportError:  # pytest without package-style tests/
    from data import reader_fixtures as fx

EVAL_MAKERS = {"kitti": fx.make_kitti, "nyu": fx.make_nyu, "scannet": fx.make_scannet, "diode": fx.make_diode,
               "eth3d": fx.make_eth3d}


def write_datasets(root):
    """Training sets (Hypersim, VKITTI at its real size for the benchmark crop) and the five test sets."""
    fx.make_hypersim(root / "hypersim", height=24, width=32)
    csv = root / "hypersim" / "metadata_images_split_scene_v1.csv"
    csv.write_text(csv.read_text() + "ai_001_001,cam_00,0,True,,test\n")  # frame 0 also as a test image (normals)
    fx.make_vkitti(root / "vkitti", height=375, width=1242)
    fx.make_taskonomy(root / "taskonomy", height=24, width=32)
    fx.make_cityscapes(root / "cityscapes", height=16, width=32)
    for name, make in EVAL_MAKERS.items():
        make(root / name)
    fx.make_dis5k(root / "dis5k", height=24, width=32, splits=("DIS-TR", "DIS-VD", "DIS-TE1", "DIS-TE2",
                                                                "DIS-TE3", "DIS-TE4"))
    fx.make_p3m(root / "p3m10k", height=24, width=32, train=True)
    person = [v for j in range(17) for v in (1.5 + (j % 3), 2.0 + j / 8, 2.0)]  # inside image 1's 3 x 4 box
    fx.make_coco(root / "coco", splits=("val2017", "train2017"), keypoints=person)
    dsine = fx.make_dsine_eval(root / "dsine_eval", height=12, width=16)  # DSINE's six normal benchmarks
    return {**{name: root / name for name in ("hypersim", "vkitti", "taskonomy", "cityscapes", "dis5k", "p3m10k",
                                              "coco", *EVAL_MAKERS)}, **dsine}


@pytest.fixture(scope="module")
def paper(tmp_path_factory, tiny_base_dir):
    """The paper profile shrunk to CPU size, with SD2.1 = the tiny base folder and a tiny U-Net in it."""
    from helpers import write_tiny_unet

    write_tiny_unet(tiny_base_dir / "unet")
    roots = write_datasets(tmp_path_factory.mktemp("data"))
    mp = pytest.MonkeyPatch()
    mp.setenv("GENPERCEPT_SD21", str(tiny_base_dir))
    mp.setenv("GENPERCEPT_CACHE", str(tmp_path_factory.mktemp("cache")))
    base = profiles.get_profile("paper")
    cfg = base.replace(image_size=64, n_eval=2, train_steps=4, batch_size=2, grad_accum=2, mixed_precision="no",
                       threads=1, real=dataclasses.replace(base.real, train_resolution=(32, 48), roots=roots))
    yield cfg, prior_lib.load_or_train_prior(cfg), roots
    mp.undo()


def test_paper_prior_is_sd21_with_the_unpadded_empty_prompt(paper):
    cfg, prior, _ = paper
    assert prior.text_embedding.shape == (1, 2, 32)  # <|startoftext|> <|endoftext|>, width of the text encoder
    cond = finetune.training_cond(prior, prior.unet, 3)
    assert cond.shape == (3, 2, 32) and torch.equal(cond[2], prior.text_embedding[0])


@pytest.mark.parametrize("formulation", ["one_step", "stochastic"])
def test_fine_tunes_on_real_files_and_scores_the_five_benchmarks(paper, formulation):
    cfg, prior, _ = paper
    spec = FinetuneSpec(formulation=formulation, pixel_loss=formulation == "one_step")
    unet, history = finetune.finetune(cfg, spec, prior)
    assert len(history) == 4 and np.isfinite([h["loss"] for h in history]).all()
    before = {k: v.clone() for k, v in prior.unet.state_dict().items()}
    assert any(not torch.equal(before[k], v) for k, v in unet.state_dict().items() if k in before)
    df = experiment.run(cfg, prior, spec, evaluate.eval_domains(cfg), settings=[(1, 1)])
    assert list(df.dataset) == ["KITTI", "NYU", "ScanNet", "DIODE", "ETH3D"]
    assert df.AbsRel.notna().all() and (df.AbsRel >= 0).all() and df.delta1.between(0, 1).all()


DSINE_METRICS = ["mean", "median", "rmse", "a5", "a7_5", "a11_25", "a22_5", "a30"]


def test_normals_train_on_hypersim_and_score_dsine_s_six_benchmarks_and_its_test_split(paper):
    cfg, prior, _ = paper
    spec = FinetuneSpec(task="normal")
    assert sources.real_training_mix(cfg, spec) == {"hypersim": 1.0}
    domains = evaluate.eval_domains(cfg, "normal")
    assert domains == (*readers.DSINE_SETS, "hypersim_test")
    df = experiment.run(cfg, prior, spec, domains, trained=False)
    assert list(df.dataset) == ["NYUv2", "ScanNet", "iBims-1", "Sintel", "Virtual KITTI", "OASIS", "Hypersim (test)"]
    assert df[DSINE_METRICS].notna().all().all() and df["mean"].between(0, 180).all()
    assert df[DSINE_METRICS[3:]].apply(lambda c: c.between(0, 100)).all().all()


def test_dsine_s_benchmarks_are_scored_on_their_mask_at_full_size(paper):
    """The prediction comes back at the label's size and only DSINE's known pixels count: the ground truth itself
    scores 0 degrees on every set, whatever its unknown pixels would give."""
    cfg, _, _ = paper
    normal = tasks.get("normal")
    for name in readers.DSINE_SETS:
        ds, indices = evaluate.eval_dataset(cfg, name, "normal")
        item = ds[indices[0]]
        assert item["normal"].shape == (3, 12, 16) and 0 < item["valid"].sum() < item["valid"].size
        noisy = np.where(item["valid"], item["normal"], -item["normal"] + 0.5)  # unknown pixels: anything
        assert normal.scores([(item, noisy)])["mean"] == pytest.approx(0.0, abs=1e-3), name


def test_a_cached_model_needs_no_training_data(paper, tmp_path):
    cfg, prior, roots = paper
    spec = FinetuneSpec(seed=5)
    _, first = finetune.finetune(cfg, spec, prior)
    moved = profiles.with_overrides(cfg, {"real": {"roots": {**roots, "hypersim": tmp_path / "gone"}}})
    _, again = finetune.finetune(moved, spec, prior)  # same fingerprint: loaded from the cache, nothing read
    assert again == first
    with pytest.raises(readers.DatasetError, match="gone: no such folder"):
        finetune.finetune(moved, FinetuneSpec(seed=6), prior)


def test_a_killed_real_data_run_resumes_to_the_same_losses(paper, monkeypatch, tmp_path):
    cfg, prior, _ = paper
    spec = FinetuneSpec(formulation="stochastic", seed=7)  # random samples, flips, timesteps, noise
    _, reference = finetune.finetune(cfg, spec, prior)
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path))  # an empty cache: train again, killed after 3 steps
    finetune.finetune(cfg, spec, prior, stop_after=3)
    _, resumed = finetune.finetune(cfg, spec, prior)
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in reference], rel=1e-5)


def test_the_profile_s_lr_flip_p_reaches_the_real_stream(paper):
    cfg, prior, _ = paper
    assert sources.training_source(cfg, FinetuneSpec(), prior.vae).real.flip_p == 0.5  # the authors' configs
    assert sources.training_source(cfg.replace(lr_flip_p=0.0), FinetuneSpec(), prior.vae).real.flip_p == 0.0


def test_real_labels_train_on_taskonomy_and_cityscapes(paper):
    cfg, prior, _ = paper
    spec = FinetuneSpec(labels="reallike")
    assert sources.real_training_mix(cfg, spec) == {"taskonomy": 0.9, "cityscapes": 0.1}
    unet, history = finetune.finetune(cfg, spec, prior)
    assert len(history) == 4 and np.isfinite([h["loss"] for h in history]).all()
    with pytest.raises(NotImplementedError, match="real-label sets are read for depth only"):
        finetune.finetune(cfg, FinetuneSpec(labels="reallike", task="normal"), prior)


def test_unknown_evaluation_set(paper):
    cfg, _, _ = paper
    with pytest.raises(ValueError, match="evaluation set 'middlebury' of task 'depth': expected one of kitti"):
        evaluate.eval_dataset(cfg, "middlebury")


# ---------------------------------------------------------------------------------------------------------
# the stream
# ---------------------------------------------------------------------------------------------------------


def test_real_images_of_any_size_come_back_at_their_own_size(paper):
    cfg, prior, _ = paper
    item = {"rgb": np.random.default_rng(0).random((3, 30, 50), dtype=np.float32)}  # 64 px: 38 x 64, padded to 40
    for spec in (FinetuneSpec(), FinetuneSpec(task="normal")):
        pred = evaluate.predict_example(cfg, prior.unet, prior.vae, spec, item, text_embedding=prior.text_embedding)
        assert pred.shape[-2:] == (30, 50) and np.isfinite(pred).all()
    assert np.abs(pred).max() <= 1.0 + 1e-5  # the authors' processing clips normals, it does not renormalise them
    ours = evaluate.predict_example(cfg.replace(processing="marigold"), prior.unet, prior.vae, spec, item,
                                    text_embedding=prior.text_embedding)
    assert np.allclose(np.linalg.norm(ours, axis=0), 1.0, atol=1e-4)  # ours: unit vectors


def test_training_sample_resizes_labels_nearest_and_mirrors_normals():
    depth = np.array([[1.0, 1.0, 5.0, 5.0]] * 2, np.float32)  # [2, 4]: two values, never a blend
    normal = np.zeros((3, 2, 4), np.float32)
    normal[0] = 1.0  # facing right
    item = {"rgb": np.random.default_rng(0).random((3, 2, 4), dtype=np.float32), "depth": depth,
            "normal": normal, "valid": depth > 0}
    out = stream.training_sample(item, "depth", (4, 8), flip=True)
    assert out["rgb"].shape == (3, 4, 8) and out["label"].shape == (4, 8) and out["valid"].dtype == torch.bool
    assert set(out["label"].unique().tolist()) == {1.0, 5.0}
    assert out["label"][0, 0] == 5.0  # mirrored: the far wall is now on the left
    flipped = stream.training_sample(item, "normal", (2, 4), flip=True)
    assert torch.all(flipped["label"][0] == -1.0)  # x component mirrored with the image
    with pytest.raises(readers.DatasetError, match="no normal label"):
        stream.training_sample({k: v for k, v in item.items() if k != "normal"}, "normal", (2, 4), flip=False)


def test_stream_is_seeded_and_smaller_sets_are_nested(tmp_path):
    roots = {"hypersim": tmp_path / "hypersim", "vkitti": tmp_path / "vkitti"}
    fx.make_hypersim(roots["hypersim"], height=12, width=16)
    fx.make_vkitti(roots["vkitti"], height=375, width=1242)
    mix = {"hypersim": 0.5, "vkitti": 0.5}
    s = stream.RealStream(mix, "depth", (16, 24), seed=0, roots=roots)
    a = s.batch(torch.Generator().manual_seed(1), 6)
    b = s.batch(torch.Generator().manual_seed(1), 6)
    assert all(torch.equal(a[k], b[k]) for k in a) and a["rgb"].shape == (6, 3, 16, 24)
    assert len(s) == 2  # one Hypersim train frame, one VKITTI frame
    big = stream.RealStream(mix, "depth", (16, 24), fraction=1.0, seed=3, roots=roots).indices
    small = stream.RealStream(mix, "depth", (16, 24), fraction=0.5, seed=3, roots=roots).indices
    assert all(set(small[k]) <= set(big[k]) for k in big)
    never = stream.RealStream(mix, "depth", (16, 24), seed=0, roots=roots, flip_p=0.0)
    always = stream.RealStream(mix, "depth", (16, 24), seed=0, roots=roots, flip_p=1.0)
    x, y = (s.batch(torch.Generator().manual_seed(2), 6) for s in (never, always))
    assert torch.equal(x["rgb"].flip(-1), y["rgb"]) and torch.equal(x["label"].flip(-1), y["label"])
    with pytest.raises(ValueError, match="training mix names 'nyu'"):
        stream.RealStream({"nyu": 1.0}, "depth", (16, 24), roots=roots)
    with pytest.raises(ValueError, match="expected non-negative weights"):
        stream.RealStream({"hypersim": 0.0}, "depth", (16, 24), roots=roots)


# ---------------------------------------------------------------------------------------------------------
# the notebooks themselves, paper profile, on the same files (what `make reproduce PROFILE=paper` runs)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.notebooks
def test_every_notebook_runs_in_the_paper_profile_on_real_files(paper, tmp_path):
    """`make reproduce PROFILE=paper`, shrunk by the notebooks' `overrides` parameter to tiny sizes (evaluation at
    64 px: each benchmark's own resolution, tested above, costs ~4 of these 6 minutes)."""
    import pandas as pd

    from genpercept_lib.apps import reproduce

    cfg, _, roots = paper
    overrides = {"image_size": cfg.image_size, "n_eval": cfg.n_eval, "train_steps": 2, "batch_size": 2,
                 "grad_accum": 1, "mixed_precision": "no", "threads": 1, "denoise_steps": [1, 2],
                 "ensemble_sizes": [1, 2], "runtime_model": "tiny", "runtime_resolution": 64, "runtime_images": 1,
                 "runtime_ensemble": 2, "runtime_steps": 2, "seeds": 2,
                 "real": {"train_resolution": [32, 48], "processing_res": 64,
                          "roots": {k: str(v) for k, v in roots.items()}},
                 "tasks": {"pose": {"crop": [48, 64]}}}
    out = tmp_path / "results"
    prov = reproduce.run_notebooks("paper", results_dir=out, progress_bar=False, jobs=2,  # one thread each
                                   extra_parameters={"overrides": overrides})
    assert set(prov["notebooks"]) == {p.name for p in reproduce.list_notebooks()}
    assert all(e["status"] == "ok" for e in prov["notebooks"].values())
    table2 = pd.read_csv(out / "tables" / "table2_data_volume.csv")
    ours = table2[table2.source == "this-run"]
    assert set(ours.profile) == {"paper"} and set(ours.domain) == {"kitti", "nyu", "scannet", "diode", "eth3d"}
    assert set(ours.dataset) <= set(table2[table2.source == "paper"].dataset)  # the paper's keys, side by side
    assert ours.AbsRel.notna().all()
    normals = pd.read_csv(out / "tables" / "depth_normals.csv")
    ours = normals[(normals.source == "this-run") & (normals.task == "normal") & (normals.kind == "model")]
    for domain in (*readers.DSINE_SETS, "hypersim_test"):  # the six readers, on their fixtures, and Hypersim
        assert set(DSINE_METRICS) <= set(ours[ours.domain == domain].metric), domain
    assert ours.value.notna().all()
    per_set = pd.read_csv(out / "tables" / "normals_dsine.csv")
    assert list(per_set[per_set.source == "this-run"].dataset.unique()) == [
        "NYUv2", "ScanNet", "iBims-1", "Sintel", "Virtual KITTI", "OASIS", "Hypersim (test)"]
    assert (out / "figures" / "07_depth_normals_grid.png").is_file()
    gen = pd.read_csv(out / "tables" / "generalization.csv")
    assert {"synthetic (clean labels)", "real (Taskonomy + Cityscapes)"} <= set(gen.training_labels)
    dis = pd.read_csv(out / "tables" / "table4_dis.csv")
    assert {"DIS-VD", "DIS-TE4"} <= set(dis[dis.source == "this-run"].dataset)
    assert set(pd.read_csv(out / "tables" / "matting.csv").domain) >= {"P3M-500-NP"}
    assert "hypersim_test" in set(pd.read_csv(out / "tables" / "segmentation.csv").domain)
    assert "val2017" in set(pd.read_csv(out / "tables" / "table3_pose.csv").domain)


def test_overrides_change_fields_and_keep_the_other_real_data_settings():
    cfg = profiles.with_overrides(profiles.get_profile("paper"),
                                  {"train_steps": 7, "denoise_steps": [1, 10], "real": {"roots": {"kitti": "/k"}}})
    assert cfg.train_steps == 7 and cfg.denoise_steps == (1, 10)
    assert cfg.real.roots == {"kitti": "/k"} and cfg.real.train_resolution == (480, 640)
    with pytest.raises(ValueError, match="overrides: unknown profile field 'trian_steps': expected one of source"):
        profiles.setup("smoke", overrides={"trian_steps": 1})


def test_evaluation_uses_the_authors_settings_per_benchmark(paper, monkeypatch):
    """script/eval_sd21/eval_ensemble1_step1: NYUv2, KITTI, ScanNet at native resolution, DIODE at 640, ETH3D at
    756 with the alignment fitted on <= 1024 px; seed 1234; the authors' image processing."""
    cfg, prior, _ = paper
    assert cfg.processing == "authors" and evaluate.eval_seed(cfg) == 1234
    expected = {"kitti": 0, "nyu": 0, "scannet": 0, "diode": 640, "eth3d": 756}
    assert {d: evaluate.eval_set(d).processing_res for d in evaluate.eval_domains(cfg)} == expected
    assert evaluate.protocol(cfg, "eth3d")["align_max_res"] == 1024
    assert "align_max_res" not in evaluate.protocol(cfg, "nyu")
    from genpercept_lib import images

    seen = []
    real_prepare = images.prepare
    def spy(image, res, *args, **kwargs):
        seen.append(res)
        return real_prepare(image, res, *args, **kwargs)

    monkeypatch.setattr(images, "prepare", spy)
    spec = FinetuneSpec()
    for domain in expected:
        seen.clear()
        list(evaluate.predictions(cfg, prior.unet, prior.vae, spec, domain, text_embedding=prior.text_embedding))
        assert seen and set(seen) == {expected[domain]}, domain


def test_one_processing_resolution_may_replace_every_benchmarks_own(paper, monkeypatch):
    """``real.processing_res``: a quick look at one resolution (the table note says it is not the authors')."""
    cfg, prior, _ = paper
    quick = profiles.with_overrides(cfg, {"real": {"processing_res": 48}})
    from genpercept_lib import images

    seen = []
    real_prepare = images.prepare
    monkeypatch.setattr(images, "prepare", lambda image, res, *a, **k: seen.append(res) or real_prepare(image, res,
                                                                                                         *a, **k))
    for domain in ("kitti", "eth3d"):
        list(evaluate.predictions(quick, prior.unet, prior.vae, FinetuneSpec(), domain,
                                  text_embedding=prior.text_embedding))
    assert seen and set(seen) == {48}
    assert "processing resolution 48 for every set" in evaluate.eval_where(quick)
    assert "the authors' evaluation settings" in evaluate.eval_where(cfg)
    for bad in (-1, 1.5, "768", True):  # a profile built by hand is checked too
        with pytest.raises(ValueError, match=r"RealData.processing_res=.*: expected an integer >= 0"):
            dataclasses.replace(cfg.real, processing_res=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "768", True])
def test_a_bad_processing_resolution_stops_the_run_before_it_starts(bad):
    """The override is checked with the others (setup, ``reproduce``), not first at evaluation."""
    with pytest.raises(profiles.ConfigError, match=r"^overrides: real.processing_res=.*: expected an integer >= 0"):
        profiles.with_overrides(profiles.get_profile("paper"), {"real": {"processing_res": bad}})
    native = profiles.with_overrides(profiles.get_profile("paper"), {"real": {"processing_res": 0}})
    assert native.real.processing_res == 0


def test_the_vae_ceiling_is_taken_at_the_resolution_the_models_are_evaluated_at(paper, monkeypatch):
    """Was: a benchmark evaluated at its native size (KITTI, NYUv2, ScanNet: processing_res 0) had its ceiling taken
    at the profile's image_size instead, so the ceiling and the model saw different resolutions."""
    cfg, prior, _ = paper
    seen = {}
    real_ceiling = experiment.ceiling_prediction

    def spy(task, vae, item, res, processing):
        seen.setdefault(current, set()).add(res)
        return real_ceiling(task, vae, item, res, processing)

    monkeypatch.setattr(experiment, "ceiling_prediction", spy)
    for current in ("kitti", "diode"):
        experiment.vae_ceiling(cfg, prior, FinetuneSpec(), [current])
    assert seen == {"kitti": {0}, "diode": {640}} == {d: {evaluate.eval_res(cfg, d)} for d in seen}
