"""The shipped toy Stable Diffusion: the builder (smoke size), its resume after a kill, the integrity check, and
the committed data/toy_sd against its own provenance."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from genpercept_lib import prior as prior_lib
from genpercept_lib import profiles

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_toy_sd.py"


def _recipes():
    spec = importlib.util.spec_from_file_location("build_toy_sd", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPES


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A smoke-size toy SD built in one go (its renders cached under a private GENPERCEPT_CACHE)."""
    root = tmp_path_factory.mktemp("toy_sd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENPERCEPT_CACHE", str(root / "cache"))
        out = prior_lib.build_toy_sd(_recipes()["smoke"], out=root / "toy_sd", work=root / "work", command="test")
    return out


def test_build_writes_diffusers_folders_with_checksums(built):
    meta = prior_lib.verify_shipped(built)
    assert set(meta["files"]) >= {"vae/config.json", "vae/diffusion_pytorch_model.safetensors", "unet/config.json",
                                  "unet/diffusion_pytorch_model.safetensors", "history.json"}
    assert meta["command"] == "test" and meta["latent_grid"] == [8, 8]  # 32 px through a 4x VAE
    assert meta["final_losses"]["vae"] > 0 and meta["host_cpu"]
    prior = prior_lib.load_shipped(built)
    assert prior.unet.config.sample_size == 8 and prior.vae.config.scaling_factor != 1.0
    assert len(prior.history["unet"]) == _recipes()["smoke"].unet_steps
    assert (built / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_killed_build_resumes_to_the_same_weights(built, tmp_path, monkeypatch):
    """Killed in the generator's training after a checkpoint, the same call continues from it and gives the
    weights of the uninterrupted build."""
    from genpercept_lib import train as train_lib

    monkeypatch.setenv("GENPERCEPT_CACHE", str(built.parent / "cache"))  # the fixture's cached renders
    real = train_lib.train

    def killed(*args, desc="", **kwargs):
        if desc == "prior: U-Net":
            real(*args, desc=desc, stop_after=4, **kwargs)  # checkpoints at 2 and 4 (checkpoint_every=2)
            raise KeyboardInterrupt
        return real(*args, desc=desc, **kwargs)

    monkeypatch.setattr(prior_lib, "train", killed)
    recipe = _recipes()["smoke"]
    with pytest.raises(KeyboardInterrupt):
        prior_lib.build_toy_sd(recipe, out=tmp_path / "toy_sd", work=tmp_path / "work")
    assert not (tmp_path / "toy_sd").exists()  # nothing half-written where the toy SD goes
    monkeypatch.setattr(prior_lib, "train", real)
    out = prior_lib.build_toy_sd(recipe, out=tmp_path / "toy_sd", work=tmp_path / "work")
    resumed, whole = prior_lib.load_shipped(out), prior_lib.load_shipped(built)
    for a, b in zip(resumed.unet.state_dict().values(), whole.unet.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert json.loads((tmp_path / "work" / "elapsed.json").read_text())["seconds"] > 0


@pytest.mark.parametrize("damage", ["altered", "missing", "provenance"])
def test_a_damaged_toy_sd_is_one_line_naming_the_file(built, tmp_path, damage):
    import shutil

    copy = tmp_path / "toy_sd"
    shutil.copytree(built, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    if damage == "altered":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
        culprit, why = weights, "sha256 differs"
    elif damage == "missing":
        weights.unlink()
        culprit, why = weights, "missing"
    else:
        (copy / "provenance.json").write_text("{not json")
        culprit, why = copy / "provenance.json", "unreadable"
    with pytest.raises(prior_lib.PriorIntegrityError) as err:
        prior_lib.load_shipped(copy)
    message = str(err.value)
    assert "\n" not in message and str(culprit) in message and why in message and "make prior" in message


def test_the_toy_sd_profile_loads_the_shipped_folder(built, monkeypatch):
    monkeypatch.setattr(prior_lib, "SHIPPED", built)
    monkeypatch.setattr(prior_lib.load_shipped, "__defaults__", (built,))
    prior = prior_lib.load_or_train_prior(profiles.get_profile("smoke").replace(model="toy_sd"))
    assert prior.folder == built and not prior.trained_now


def test_the_committed_toy_sd_matches_its_provenance():
    """data/toy_sd as committed: every file's sha256 equals provenance.json's, it loads, and it stays small."""
    folder = prior_lib.SHIPPED
    meta = prior_lib.verify_shipped(folder)
    total = sum((folder / name).stat().st_size for name in meta["files"])
    assert total <= 30 * 2**20
    assert meta["latent_grid"][0] >= 16 and meta["recipe"]["n_images"] > 2048
    listed = set(meta["files"]) | {"provenance.json"}
    on_disk = {str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file()}
    assert on_disk == listed  # nothing unlisted shipped beside it
    prior = prior_lib.load_shipped(folder)
    assert prior.unet.config.sample_size == meta["latent_grid"][0]


def _script(name):
    path = SCRIPT.parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_script_writes_a_row_per_kind_fit_and_domain(built, tmp_path, monkeypatch):
    import pandas as pd

    from genpercept_lib.data import toyworld

    monkeypatch.setenv("GENPERCEPT_CACHE", str(built.parent / "cache"))
    out = tmp_path / "probe.csv"
    args = ["--prior", str(built), "--fits", "2", "--n-fit", "16", "--n-eval", "2", "-o", str(out)]
    _script("probe_prior").main(args)
    table = pd.read_csv(out)
    domains = toyworld.EVAL_DOMAINS + toyworld.TRAIN_DOMAINS
    assert len(table) == 3 * 2 * len(domains)
    assert set(table.kind) == {"toy_sd", "random_unet", "image_blind"}
    assert set(table[table.split == "heldout"].domain) == set(toyworld.EVAL_DOMAINS)
    assert table.abs_rel.between(0, 10).all()


def test_step_benchmark_compares_our_loop_with_a_bare_one(built, tmp_path):
    import pandas as pd

    out = tmp_path / "bench.csv"
    _script("bench_step").main(["--prior", str(built), "--batches", "2", "--threads", "1", "--steps", "2",
                                "--repeats", "1", "-o", str(out)])
    table = pd.read_csv(out).set_index("loop")
    assert set(table.index) == {"ours", "bare"} and table.loc["bare", "overhead"] == 0
    assert table.loc["ours", "ms_per_step"] > 0
    ratio = table.loc["ours", "ms_per_step"] / table.loc["bare", "ms_per_step"] - 1
    assert table.loc["ours", "overhead"] == pytest.approx(ratio, abs=2e-3)
