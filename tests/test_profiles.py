"""Profiles and their typed settings: ``Profile`` holds run sizes, ``RealData`` the real-data settings, each task its
own ``TaskSettings`` per profile; a notebook's overrides reach every one, and a wrong one is a one-line error."""

import ast
import dataclasses
from pathlib import Path

import pytest

from genpercept_lib import profiles, tasks
from genpercept_lib.profiles import ConfigError, PerProfile, RealData, TaskSettings

LIB = Path(profiles.__file__).resolve().parent


def one_line_error(cfg, overrides, match: str) -> str:
    """The message of the ConfigError ``overrides`` raise: matching ``match``, on one line."""
    with pytest.raises(ConfigError, match=match) as err:
        profiles.with_overrides(cfg, overrides)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_profile_holds_no_untyped_or_task_keyed_settings():
    names = {f.name for f in dataclasses.fields(profiles.Profile)}
    assert not names & {"extra", "task_sizes", "task_steps", "task_lr"}
    assert isinstance(profiles.get_profile("paper").real, RealData)
    assert all(not p.tasks for p in profiles.PROFILES.values())  # tasks hold their own values; this is for overrides


def test_nothing_outside_profiles_py_is_keyed_by_profile_name():
    """A value per profile is a ``PerProfile`` (every profile named, typed), never a dict keyed by profile name."""
    for path in LIB.rglob("*.py"):
        if path.name == "profiles.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                assert len(keys & set(profiles.PROFILE_NAMES)) < 2, f"{path.name}:{node.lineno} keyed by profile name"


def test_per_profile_values_cover_every_profile_and_name_a_bad_one():
    values = PerProfile(smoke=1, default=2, paper=3)
    assert [values.of(profiles.get_profile(n)) for n in profiles.PROFILE_NAMES] == [1, 2, 3]
    assert PerProfile.same("x").of(profiles.get_profile("paper")) == "x"
    with pytest.raises(ConfigError, match="profile 'mine': expected one of smoke, default, paper"):
        values.of(profiles.get_profile("smoke").replace(name="mine"))


def test_a_task_has_its_own_settings_per_profile_and_the_profiles_elsewhere():
    default, smoke = profiles.get_profile("default"), profiles.get_profile("smoke")
    assert tasks.get("matting").settings(default) == TaskSettings(size=96, steps=400, lr=default.lr)
    assert tasks.get("dis").settings(default).size == 96 and tasks.get("seg_toy").settings(default).steps == 800
    assert tasks.get("depth").settings(default) == TaskSettings(size=64, steps=400, lr=1e-3)
    assert tasks.get("matting").settings(smoke) == TaskSettings(size=smoke.image_size, steps=smoke.train_steps,
                                                                lr=smoke.lr)


@pytest.mark.parametrize("setting, value", [("size", 48), ("steps", 7), ("lr", 2e-3)])
def test_an_override_changes_one_tasks_own_setting(setting, value):
    cfg = profiles.with_overrides(profiles.get_profile("default"), {"tasks": {"matting": {setting: value}}})
    assert getattr(tasks.get("matting").settings(cfg), setting) == value
    other = tasks.get("matting").own_settings.default
    kept = {f: getattr(other, f) for f in ("size", "steps") if f != setting}  # the task's other values stay
    assert all(getattr(tasks.get("matting").settings(cfg), f) == v for f, v in kept.items())
    assert tasks.get("depth").settings(cfg) == tasks.get("depth").settings(profiles.get_profile("default"))


def test_task_overrides_merge_per_task():
    cfg = profiles.with_overrides(profiles.get_profile("smoke"), {"tasks": {"dis": {"size": 48}}})
    cfg = profiles.with_overrides(cfg, {"tasks": {"dis": {"steps": 3}, "matting": {"lr": 1e-3}}})
    assert cfg.tasks == {"dis": {"size": 48, "steps": 3}, "matting": {"lr": 1e-3}}


@pytest.mark.parametrize("overrides, match", [
    ({"tasks": {"dis": {"size": 8}}}, r"^overrides: tasks.dis.size=8: expected an integer >= 16"),
    ({"tasks": {"dis": {"steps": True}}}, r"^overrides: tasks.dis.steps=True: expected an integer >= 1"),
    ({"tasks": {"dis": {"lr": 2}}}, r"^overrides: tasks.dis.lr=2: expected a learning rate in \(0, 1\)"),
    ({"tasks": {"dis": 5}}, r"^overrides: tasks=.*: expected a dict of task name -> \{setting: value\}"),
])
def test_a_bad_task_override_is_one_line_before_the_run_starts(overrides, match):
    one_line_error(profiles.get_profile("smoke"), overrides, match)


def test_an_unknown_task_setting_is_named_when_the_task_reads_it():
    cfg = profiles.with_overrides(profiles.get_profile("smoke"), {"tasks": {"dis": {"szie": 48}}})
    with pytest.raises(ConfigError, match=r"^overrides: unknown tasks.dis setting 'szie': expected one of size, "
                                          r"steps, lr$"):
        tasks.get("dis").settings(cfg)


@pytest.mark.parametrize("setting, value, expected", [
    ("train_resolution", [240, 320], (240, 320)),
    ("train_mix", {"hypersim": 1.0}, {"hypersim": 1.0}),
    ("real_label_mix", {"taskonomy": 1}, {"taskonomy": 1}),
    ("eval_seed", 7, 7),
    ("roots", {"kitti": "/k"}, {"kitti": "/k"}),
    ("processing_res", 384, 384),
])
def test_an_override_changes_one_real_data_setting_and_keeps_the_others(setting, value, expected):
    paper = profiles.get_profile("paper")
    cfg = profiles.with_overrides(paper, {"real": {setting: value}})
    assert getattr(cfg.real, setting) == expected
    assert dataclasses.replace(cfg.real, **{setting: getattr(paper.real, setting)}) == paper.real


@pytest.mark.parametrize("setting, value, expected", [
    ("train_resolution", [480], r"a \(height, width\) pair of integers >= 8"),
    ("train_mix", {"hypersim": -1}, "a dict of reader -> weight >= 0"),
    ("real_label_mix", {}, "a dict of reader -> weight >= 0"),
    ("eval_seed", -1, "an integer >= 0 or null"),
    ("roots", {"kitti": 3}, "a dict of reader name -> folder"),
    ("processing_res", 1.5, r"an integer >= 0 \(0 = native size\)"),
])
def test_a_bad_real_data_override_is_one_line(setting, value, expected):
    one_line_error(profiles.get_profile("paper"), {"real": {setting: value}},
                   rf"^overrides: real.{setting}=.*: expected {expected}")


def test_an_unknown_real_data_setting_lists_the_known_ones():
    message = one_line_error(profiles.get_profile("paper"), {"real": {"root": {}}}, r"^overrides: unknown real "
                                                                                      r"setting 'root'")
    assert "train_resolution" in message and "processing_res" in message


@pytest.mark.parametrize("old", ["extra", "task_sizes", "task_steps", "task_lr"])
def test_a_moved_spelling_says_where_the_setting_lives_now(old):
    message = one_line_error(profiles.get_profile("smoke"), {old: {}}, rf"^overrides: '{old}' is no profile field")
    assert '"tasks"' in message or '"real"' in message


def test_check_field_checks_the_typed_sub_configs_too():
    profiles.check_field("real", {"eval_seed": 3})
    profiles.check_field("tasks", {"pose": {"steps": 3}})
    with pytest.raises(ConfigError, match=r"^overrides: real.eval_seed='3': expected an integer >= 0"):
        profiles.check_field("real", {"eval_seed": "3"})
    with pytest.raises(ConfigError, match=r"^overrides: train_steps=0: expected an integer >= 1$"):
        profiles.check_field("train_steps", 0)
