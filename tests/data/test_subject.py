"""Subject framing for DIS and matting (``toyworld.render(..., subject=True)``): the plain scenes stay byte-identical,
the framed target is its scene's subject, the DIS and matting pools are framed, and scripts/subject_check.py runs."""

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from genpercept_lib import profiles, sources, tasks
from genpercept_lib.data import pool
from genpercept_lib.data import toyworld as tw

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# sha256 of every array of toyworld.render(domain, index, 64), recorded with the renderer before subject framing
# existed (commit 63c3450): a regression fixture, the plain scenes (depth, normals, segmentation, the toy SD's
# images) must not move
PLAIN_64PX = {
    "toy_hypersim:0": "df3e0c3ca9ba4ce2bfa5a82e75c08b24eb5b15dbf0e237ab5dd25464d514fffc",
    "toy_hypersim:500001": "0bdebaa3284b66389dadb89376908288e7ba69bef7fa2a7a6bd82f4a8948b2c1",
    "toy_vkitti:3": "d91ecdff1132430c175501e369d2b13d2e05704b7e6b73cde25d3b559acbc868",
    "toy_kitti:0": "0ca16e12a1d9f0ada1edb7e8cb67722d484ccd6672442639b2801fe31e072c51",
    "toy_kitti:500001": "efcdcecb4392dc8d409c59f9e59cf691682761550de43d24f6f78eb931e8b73f",
    "toy_nyu:3": "01a7f703e88625bb43401ccee840aa838a60ea18c3eba00839bc7b193694853a",
    "toy_nyu:500001": "8d0ec551d87ef58a3eb9221af1044b7019f5ff60756839d7eb49f2fd392e7844",
    "toy_scannet:0": "59711697015fe95aefc6aac5bb526ab0a715efc39324739e92d5f7008d3d7439",
    "toy_scannet:500001": "d92cd6fdbc9307bd06a4f73c21efb9253547f480080edcad2d21366a42f787b4",
    "toy_diode:0": "cfcfeb7e50d1577051027a5c7a90a0f82d0d8508dc7b1319444500e26c1bf70e",
    "toy_diode:3": "6b86e0fb4f92a5a7c754f578e8f4404ca9efbf9e0443478d7a6186e190daa190",
    "toy_diode:500001": "e0faa6e1b0cea418858664e0ff8fb241e8ef18303b4d52c08c91e21848b31ced",
    "toy_eth3d:3": "b1420be4e7ae95a87b153b5957153594d349f6fbcea2075b29b2e1d26035272f",
    "toy_eth3d:500001": "e3799df0f1f9980a433484e736f13d6c3beab5e858bba508fee221fdf5e0b9a6",
    "toy_hypersim_reallike:3": "ddbd16af0f538997f7ba3981150bb4786b62047bea17cb83595178f8e299c53b",
    "toy_vkitti_reallike:500001": "c19da20bae767fd0019d87a14daa314fe1bf20a5f9fb58c1d934363a387b2e46",
}


def digest(sample: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(sample):
        v = sample[k]
        if isinstance(v, np.ndarray):
            h.update(k.encode())
            h.update(str(v.dtype).encode())
            h.update(str(v.shape).encode())
            h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def check_script():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import subject_check

        yield subject_check
    finally:
        sys.path.remove(str(SCRIPTS))


def test_every_domain_is_in_the_fixture():
    assert {key.split(":")[0] for key in PLAIN_64PX} == set(tw.DOMAINS)


@pytest.mark.parametrize("key", sorted(PLAIN_64PX))
def test_plain_renders_are_byte_identical_to_before(key):
    domain, index = key.split(":")
    assert digest(tw.render(domain, int(index), 64)) == PLAIN_64PX[key]
    assert digest(tw.render(domain, int(index), 64, subject=False)) == PLAIN_64PX[key]


def test_subject_must_be_a_bool():
    with pytest.raises(ValueError, match="subject must be a bool"):
        tw.render("toy_nyu", 0, 32, subject="yes")


def test_the_framed_target_is_the_subject(check_script):
    """On held-out scenes: a mask in every scene, the target the largest object of its class in most (by its
    bounding box), near the centre and larger than in the plain scenes."""
    domains = pool.domain_draws({d: 1.0 for d in tw.EVAL_DOMAINS}, 30, 0)
    found = {framing: [check_script.measure(tw.render(d, pool.OFFSETS["eval"] + i, 64, subject=framing))
                       for i, d in enumerate(domains)] for framing in (False, True)}
    framed = found[True]
    assert not any(m["empty"] for m in framed)
    assert np.mean([m["largest_box"] for m in framed]) >= 0.85
    assert np.mean([m["largest"] for m in framed]) >= 0.7
    assert np.median([m["centre"] for m in framed]) < 0.12
    assert np.median([m["area"] for m in framed]) > np.median([m["area"] for m in found[False] if not m["empty"]])
    # the thin structures stay: wires / strands / legs give fractional alpha in the framed scenes too
    assert np.median([m["soft"] for m in framed]) > 0.1


def test_the_rest_of_the_scene_keeps_its_style():
    """Same domain, same room or street: only the foreground's placement, the aim and what stands near differ."""
    plain, framed = tw.render("toy_nyu", 7, 48), tw.render("toy_nyu", 7, 48, subject=True)
    assert not np.array_equal(plain["rgb"], framed["rgb"])
    assert set(np.unique(framed["semantic"])) & {tw.CLASSES.index(c) for c in ("wall", "floor")}
    again = tw.render("toy_nyu", 7, 48, subject=True)
    assert np.array_equal(framed["rgb"], again["rgb"]) and np.array_equal(framed["alpha"], again["alpha"])


def test_dis_and_matting_pools_are_framed_and_others_are_not(monkeypatch, tmp_path):
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path))
    cfg = profiles.get_profile("smoke").replace(n_eval=2, n_train=4, batch_size=2)
    for name in ("dis", "matting"):
        task = tasks.get(name)
        assert task.subject_framing and "/subject" in task.model_tag(cfg)  # models trained on framed scenes
        split = "DIS-VD" if name == "dis" else "toy_nyu"
        got = task.eval_pool(cfg, split, pool.render_pool)
        plain = pool.render_pool({d: 1.0 for d in tw.EVAL_DOMAINS} if name == "dis" else "toy_nyu",
                                 5 * cfg.n_eval if name == "dis" else cfg.n_eval, task.toy_size(cfg), split="eval",
                                 seed=cfg.seed, keys=task.pool_keys)
        framed = pool.render_pool({d: 1.0 for d in tw.EVAL_DOMAINS} if name == "dis" else "toy_nyu",
                                  5 * cfg.n_eval if name == "dis" else cfg.n_eval, task.toy_size(cfg), split="eval",
                                  seed=cfg.seed, keys=task.pool_keys, subject=True)
        assert not np.array_equal(plain["rgb"], framed["rgb"])
        if name == "matting":
            assert np.array_equal(got["rgb"], framed["rgb"])
        else:  # a split of the framed pool
            assert any(np.array_equal(got["rgb"][0], x) for x in framed["rgb"])
    # the training pool too
    from genpercept_lib.spec import FinetuneSpec

    spec = FinetuneSpec(task="matting")
    train = sources.training_pool(cfg, spec)
    framed = pool.render_pool(sources.training_mix(spec), cfg.n_train, tasks.get("matting").toy_size(cfg),
                              split="train", seed=cfg.seed, keys=tasks.get("matting").pool_keys, subject=True)
    assert np.array_equal(train["rgb"], framed["rgb"][: len(train["rgb"])])
    # depth keeps the plain scenes, and its model key
    depth = tasks.get("depth")
    assert not depth.subject_framing and "/subject" not in depth.model_tag(cfg)


def test_the_cache_key_changes_only_with_the_option(monkeypatch, tmp_path):
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path))
    pool.render_pool("toy_nyu", 1, 32, split="eval")
    pool.render_pool("toy_nyu", 1, 32, split="eval", subject=False)
    assert len(list((tmp_path / "toyworld").glob("*.npz"))) == 1  # the same entry
    pool.render_pool("toy_nyu", 1, 32, split="eval", subject=True)
    assert len(list((tmp_path / "toyworld").glob("*.npz"))) == 2


def test_the_check_script_runs_small(check_script, tmp_path, capsys):
    out = tmp_path / "check.csv"
    check_script.main(["--n", "6", "--size", "32", "--out", str(out)])
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == list(check_script.COLUMNS)
    rows = [line.split(",") for line in lines[1:]]
    assert [r[:2] for r in rows if r[1] == "all"] == [["plain", "all"], ["subject", "all"]]
    assert "wrote" in capsys.readouterr().out


def test_the_committed_check_says_the_subject_is_framed():
    import csv

    path = Path(__file__).resolve().parents[2] / "data" / "subject_check.csv"
    rows = {(r["framing"], r["group"]): r for r in csv.DictReader(open(path))}
    plain, framed = rows["plain", "all"], rows["subject", "all"]
    assert int(framed["n"]) >= 200
    assert float(framed["largest"]) > float(plain["largest"]) and float(framed["largest_box"]) >= 0.95
    assert float(framed["centre_median"]) < float(plain["centre_median"]) and float(framed["empty"]) == 0
