"""The command line's error contract: a user's mistake is one line and exit status 2, a bug keeps its traceback."""

import pytest

from genpercept_lib.apps import cli


def test_user_errors_are_one_line(capsys):
    assert cli.main(["train", "--profile", "smoke", "--task", "albedo"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown task 'albedo': expected one of depth" in err and len(err.splitlines()) == 1


def test_runtime_errors_keep_their_traceback(monkeypatch):
    def oom(args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setitem(cli.COMMANDS, "train", (cli.COMMANDS["train"][0], oom))
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        cli.main(["train"])


@pytest.mark.parametrize("argv,heavy", [
    (["--help"], []), (["reproduce", "--help"], []), (["toyworld", "--help"], []),
    (["predict", "--help"], ["torch"]),  # the task registry (its --task help); diffusers only to load a model
    (["predict", "--base", "b", "--unet", "u", "--task", "albedo", "-o", "o", "x.png"], ["torch"]),  # a one-line error
])
def test_only_the_command_that_runs_imports_torch(argv, heavy):
    """``genpercept --help`` took 15 s on a slow CPU: building every subcommand imported torch and diffusers."""
    import subprocess
    import sys

    code = ("import sys\nfrom genpercept_lib.apps import cli\n"
            "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(heavy), done.stdout
    assert "usage: genpercept" in done.stdout or "unknown task 'albedo'" in done.stderr, done.stderr


def test_a_command_s_own_options_are_there_and_every_command_is_listed(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--formulation" in out and "--betas START END" in out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    words = " ".join(out.split())  # argparse wraps the help lines to the terminal's width
    assert all(f"{name} {cli.HELP[name]}" in words for name in cli.COMMANDS)


def test_toyworld_into_an_existing_folder_is_one_line_and_the_grid_gets_the_usual_mode(tmp_path, capsys):
    import os

    assert cli.main(["toyworld", "-o", str(tmp_path)]) == 2  # was a 13-line IsADirectoryError traceback
    err = capsys.readouterr().err.strip()
    assert err == (f"genpercept toyworld: error: {tmp_path} is a folder: expected the path of the PNG file to "
                   f"write, e.g. {tmp_path / 'toyworld.png'}")
    old = os.umask(0o022)
    try:
        assert cli.main(["toyworld", "-o", str(tmp_path / "grid.png"), "--size", "16"]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "grid.png").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


@pytest.mark.parametrize("argv,needle", [
    (["--formulation", "deterministic", "--betas", "-1", "2"], "betas=(-1.0, 2.0): expected (beta_start, beta_end)"),
    (["--formulation", "stochastic", "--betas", "0.1", "nan"], "betas=(0.1, nan)"),
    (["--fraction", "0"], "fraction=0.0: expected a number in (0, 1]"),
    (["--labels", "noisy"], "labels='noisy': expected one of clean, reallike"),
    (["--steps", "0"], "--steps 0: expected >= 1"),
    (["--seed", "-1"], "--seed -1: expected an integer >= 0"),
    (["--init", "random"], "init='random': expected one of prior, scratch"),
])
def test_every_train_option_is_checked_before_anything_is_rendered_or_trained(argv, needle, monkeypatch, capsys,
                                                                             tmp_path):
    from genpercept_lib import prior
    from genpercept_lib.data import pool

    def must_not_run(*args, **kwargs):
        raise AssertionError("rendered or trained before the options were checked")

    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prior, "load_or_train_prior", must_not_run)
    monkeypatch.setattr(pool, "render_pool", must_not_run)
    assert cli.main(["train", "--profile", "smoke", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("genpercept train: error: ") and needle in err, err
    assert not (tmp_path / "cache").exists()
