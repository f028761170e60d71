"""The command line's error contract: a user's mistake is one line and exit status 2, a bug keeps its traceback."""

import pytest

from genpercept_lib import cli


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

    code = ("import sys\nfrom genpercept_lib import cli\n"
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
