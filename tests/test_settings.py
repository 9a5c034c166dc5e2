"""The option table is the one source: argparse, the API keywords, the recorded and
replayed options, and the README's option list come from it or are checked against it."""
import re
from pathlib import Path

import pytest

from cnnvis import recording
from cnnvis.arguments import build_parser
from cnnvis.errors import UserError
from cnnvis.settings import DreamOptions, all_options, default, option_names

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
# A bullet's stated default: "Default 1000.", "default 1.0", "(default `0,0`)", "Default `out.png`".
STATED_DEFAULT = re.compile(r"\b[Dd]efault:? `?([^\s`;,)]+(?:,[^\s`;,)]+)?)`?")


def readme_bullets(text: str) -> dict[str, str]:
    """Option name -> the README bullet (with its continuation lines) that starts with it."""
    usage = text[text.index("## Usage"):]
    bullets = re.split(r"\n(?=\s*- `--)", usage)
    found = {}
    for bullet in bullets:
        match = re.match(r"\s*- `--(\w+)", bullet)
        if match:
            found.setdefault(match.group(1), bullet.split("\n\n")[0])
    return found


def readme_problems(text: str) -> list[str]:
    """Every option the README's Usage omits, and every default it gives otherwise."""
    usage = text[text.index("## Usage"):]
    bullets = readme_bullets(text)
    problems = []
    for field, _ in all_options():
        if f"--{field.name}" not in usage:
            problems.append(f"--{field.name} is not in the README's Usage")
            continue
        match = STATED_DEFAULT.search(bullets.get(field.name, ""))
        if match is None or field.default is None or match.group(1).startswith("-"):
            continue
        stated, value = match.group(1).rstrip("."), field.default
        same = (float(stated) == value if isinstance(value, (int, float)) and not isinstance(
            value, bool) and re.fullmatch(r"[-+\d.e]+", stated) else stated == str(value))
        if not same:
            problems.append(f"the README gives --{field.name} the default {stated}, the table {value}")
    return problems


def test_the_readme_lists_every_option_with_the_tables_default():
    assert readme_problems(README) == []


def test_a_readme_default_changed_by_hand_is_caught():
    changed = README.replace("- `--num_steps`: steps at each size. Default 1000.",
                             "- `--num_steps`: steps at each size. Default 100.")
    assert changed != README
    assert readme_problems(changed) == [
        "the README gives --num_steps the default 100, the table 1000"]
    dropped = README.replace("`--tv_reg_scale`", "`--tv_scale`")
    assert "--tv_reg_scale is not in the README's Usage" in readme_problems(dropped)


def test_the_parser_has_every_option_of_the_table_and_no_other():
    parser = build_parser()
    flags = {flag for action in parser._actions for flag in action.option_strings} - {"-h", "--help"}
    table = {flag for field, setting in all_options() for flag in (f"--{field.name}", *setting.aliases)}
    assert flags == table
    defaults = {action.dest: action.default for action in parser._actions if action.dest != "help"}
    assert defaults == {field.name: field.default for field, _ in all_options()}


def test_recorded_and_replayed_options_come_from_the_table():
    assert recording.NOT_RECORDED == set(option_names(recorded=False))
    assert recording.NOT_REPLAYED == set(option_names(replayed=False))
    assert {"workers", "ray", "replay", "debug"} <= recording.NOT_REPLAYED
    assert set(recording.RECORDED_PATHS) == {"deploy_txt", "caffe_model", "mean_image",
                                             "initial_image", "guide_image", "mask", "input_video"}
    assert default("model") == "bvlc_googlenet" and default("output_depth") == 8


def test_api_keywords_are_the_tables_names():
    with pytest.raises(TypeError, match="did you mean 'num_steps'"):
        DreamOptions.from_keywords({"num_step": 3})
    with pytest.raises(UserError, match="--num_steps 0 must be at least 1"):
        DreamOptions.from_keywords({"num_steps": 0})


def test_a_misspelt_option_gets_the_closest_name(capsys):
    from cnnvis.cli import main
    assert main(["--intial_image", "x.png"]) == 2
    err = capsys.readouterr().err
    assert "did you mean --initial_image?" in err and "Traceback" not in err
