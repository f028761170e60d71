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
