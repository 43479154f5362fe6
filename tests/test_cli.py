"""`transformer-encoder`: one command whose subcommands are the package's command lines."""

import shutil
import subprocess

import pytest
from helpers import run_in_process

from transformer_encoder import cli


def test_help_lists_every_subcommand_on_a_line_of_its_own(capsys):
    cli.main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for name in cli.SUBCOMMANDS:
        assert sum(line.split()[:1] == [name] for line in lines) == 1, name


@pytest.mark.parametrize("name", list(cli.SUBCOMMANDS))
def test_each_subcommand_runs_its_modules_main(name):
    result = run_in_process(cli.main, [name, "--help"])
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--" in result.stdout  # its own options, not the overview


def test_an_unknown_subcommand_is_named_in_one_line():
    result = run_in_process(cli.main, ["trian", "mlm"])
    assert result.returncode != 0
    assert "unknown subcommand 'trian'" in result.stderr and "train" in result.stderr


def test_the_installed_entry_point():
    executable = shutil.which("transformer-encoder")
    if executable is None:
        pytest.skip("transformer-encoder is not on PATH: the package is not installed in this environment")
    result = subprocess.run([executable, "export", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--quantize" in result.stdout
