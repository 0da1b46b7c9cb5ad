"""The one command line: `swclip COMMAND`, and train/*.py as thin entry points into it."""

import subprocess
import sys
from pathlib import Path

import pytest

from swclip.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train": "train", "evaluate": "evaluate", "build_demo": "demo", "bench": "bench", "experiment": "experiment"}


def test_the_overview_lists_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert set(COMMANDS) == {
        "train",
        "evaluate",
        "demo",
        "bench",
        "synth",
        "predict",
        "import",
        "baseline",
        "info",
        "experiment",
    }
    for name, (help_text, _, _) in COMMANDS.items():
        assert f"  {name}" in text and help_text in text
    assert main([]) == 2  # no command: the overview, and a usage error


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: swclip {command}")
    parser = build_parser(command)
    assert len(parser.description) > 60, "a sentence or more on what the command does"
    for action in parser._actions:  # every option says what it is for
        assert action.help, f"swclip {command}: {action.dest} has no help"


def test_unknown_command_is_a_clear_error(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("script, command", sorted(SCRIPTS.items()))
def test_train_scripts_are_thin_entry_points(script, command):
    path = ROOT / "train" / f"{script}.py"
    text = path.read_text()
    assert "sys.path" not in text, f"{path.name} manipulates sys.path; the package is installed"
    assert f'swclip_main(["{command}"' in text
    res = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.startswith(f"usage: swclip {command}"), res.stderr[-1000:]
