"""The one layout of the ``wan-desktop`` subcommands (wan_desktop/cli_args.py): the shared
argument types, and every subcommand's argument errors as one line on stderr with exit status 2."""

from __future__ import annotations

import argparse
import inspect

import pytest

from wan_desktop import bench, cli_args, model_manager_cli
from wan_desktop.cli import main


@pytest.mark.parametrize(
    ("text", "want"), [("832x480", (832, 480)), ("832*480", (832, 480)), ("1280X720", (1280, 720))]
)
def test_size_reads_width_by_height(text, want):
    assert cli_args.size(text) == want


@pytest.mark.parametrize("text", ["832", "832x480x2", "wide x tall", ""])
def test_size_rejects_anything_else_naming_the_form(text):
    with pytest.raises(argparse.ArgumentTypeError, match="WIDTHxHEIGHT"):
        cli_args.size(text)


@pytest.mark.parametrize(("text", "want"), [("0", 0.0), ("2.5", 2.5), ("1e-3", 0.001)])
def test_positive_float_takes_finite_numbers_from_zero(text, want):
    assert cli_args.positive_float(text) == want


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "not a number"),
        ("nan", "not a finite"),
        ("inf", "not a finite"),
        ("-inf", "not a finite"),
        ("-0.5", "must not be negative"),
    ],
)
def test_positive_float_rejects_with_the_reason(text, reason):
    with pytest.raises(argparse.ArgumentTypeError, match=reason):
        cli_args.positive_float(text)


@pytest.mark.parametrize("module", [bench, model_manager_cli])
def test_subcommand_modules_share_one_layout(module):
    assert list(inspect.signature(module.add_parser).parameters) == ["subparsers"]
    assert list(inspect.signature(module.run).parameters) == ["args"]
    assert inspect.signature(module.add_parser).return_annotation in (None, "None")
    assert inspect.signature(module.run).return_annotation in (int, "int")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["generate", "--prompt", "p", "--out", "o.mp4", "--size", "big"], "WIDTHxHEIGHT"),
        (
            ["generate", "--prompt", "p", "--out", "o.mp4", "--guidance", "-1"],
            "must not be negative",
        ),
        (["bench", "--size", "big"], "WIDTHxHEIGHT"),
        (["bench", "--vram-budget", "nan"], "not a finite number"),
        (["bench", "--no-such-flag"], "unrecognized arguments"),
        (["models", "list", "--task", "t3v"], "invalid choice"),
        (["models"], "required"),
        (["export"], "required"),
    ],
)
def test_argument_errors_are_one_line_exit_2_in_every_subcommand(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert says in err
