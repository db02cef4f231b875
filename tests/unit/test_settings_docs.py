"""What docs/settings.md promises about `cml-operator run`: every flag has a CML_<FLAG> twin,
flags win over the environment, and every documented default is the parser's default."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest

from cml_operator.cli import build_parser, settings_from_args

SETTINGS_DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def run_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in commands.choices["run"]._actions if a.option_strings and a.dest != "help"]


def long_flag(action: argparse.Action) -> str:
    return next(o for o in action.option_strings if o.startswith("--"))


def twin(flag: str) -> str:
    return "CML_" + flag[2:].upper().replace("-", "_")


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])  # env is read when the parser is built


def sample(action: argparse.Action, nth: int) -> tuple[str, object]:
    """A value other than the default (``nth`` picks among several): (as text, as parsed)."""
    if action.choices:
        choices = [c for c in action.choices if c != action.default]
        return choices[nth % len(choices)], choices[nth % len(choices)]
    if action.type is int:
        value = (action.default or 0) + 3 + nth
        return str(value), value
    if action.type is float:
        value = (action.default or 0.0) + 1.5 + nth
        return str(value), value
    value = f"sample-{nth}"
    return value, value


VALUED = [a for a in run_actions(build_parser()) if a.nargs is None and not isinstance(a, argparse._AppendAction)]
SWITCHES = [a for a in run_actions(build_parser()) if isinstance(a, (argparse._StoreTrueAction,
                                                                      argparse._StoreFalseAction))]


def test_the_run_command_has_the_flags_this_test_knows_how_to_check():
    known = {long_flag(a) for a in VALUED + SWITCHES}
    others = [long_flag(a) for a in run_actions(build_parser()) if long_flag(a) not in known]
    assert others == ["--namespace"]  # checked by its own test below


@pytest.mark.parametrize("action", VALUED, ids=long_flag)
def test_every_valued_flag_has_an_environment_twin_and_the_flag_wins(action, monkeypatch):
    flag = long_flag(action)
    from_env, env_value = sample(action, 0)
    from_flag, flag_value = sample(action, 1)
    monkeypatch.setenv(twin(flag), from_env)

    assert getattr(parse(), action.dest) == env_value, f"{twin(flag)} was ignored"
    assert getattr(parse(flag, from_flag), action.dest) == flag_value, f"{flag} lost to {twin(flag)}"


@pytest.mark.parametrize("action", SWITCHES, ids=long_flag)
def test_every_switch_has_an_environment_twin_and_the_flag_wins(action, monkeypatch):
    flag = long_flag(action)
    switched = isinstance(action, argparse._StoreTrueAction)  # the value the flag sets
    monkeypatch.setenv(twin(flag), "true")
    assert getattr(parse(), action.dest) is switched, f"{twin(flag)}=true was ignored"

    monkeypatch.setenv(twin(flag), "false")
    assert getattr(parse(), action.dest) is not switched
    assert getattr(parse(flag), action.dest) is switched, f"{flag} lost to {twin(flag)}=false"


def test_the_namespace_twin_takes_a_list_and_the_flags_win(monkeypatch):
    monkeypatch.setenv("CML_NAMESPACE", "a,b")
    assert settings_from_args(parse()).namespaces == ("a", "b")
    assert settings_from_args(parse("--namespace", "c")).namespaces == ("c",)
    assert settings_from_args(parse("--all-namespaces")).namespaces == ()


def test_an_invalid_twin_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("CML_RESYNC_INTERVAL", "soon")
    with pytest.raises(SystemExit, match="CML_RESYNC_INTERVAL='soon' is not valid"):
        build_parser()


def test_switch_twins_reach_the_settings(monkeypatch):
    monkeypatch.setenv("CML_NO_BATCHING", "true")
    monkeypatch.setenv("CML_PEERING", "cml")
    monkeypatch.setenv("CML_STANDALONE", "true")
    settings = settings_from_args(parse())
    assert settings.observer.batching is False
    assert settings.peering is None  # standalone wins over a peering name


# ---------------------------------------------------------------- documented defaults


def documented_defaults() -> dict[str, str]:
    """flag -> the default column of docs/settings.md's table (cells with two flags split on ', ')."""
    found: dict[str, str] = {}
    for line in SETTINGS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`--"):
            continue
        flags = re.findall(r"`(--[a-z0-9-]+)", cells[0])
        defaults = [d.strip() for d in cells[1].split(",")] if len(flags) > 1 else [cells[1]]
        if len(defaults) != len(flags):
            defaults = defaults * len(flags) if len(defaults) == 1 else defaults
        found.update(zip(flags, defaults))
    return found


#: Words the table uses for defaults that are not literal values.
WORDS = {"none": None, "off": "off", "all": "all", "standalone": "standalone"}


def test_every_flag_is_in_the_settings_table_and_every_row_is_a_flag():
    flags = {long_flag(a) for a in run_actions(build_parser())}
    assert set(documented_defaults()) == flags


@pytest.mark.parametrize("action", run_actions(build_parser()), ids=long_flag)
def test_every_documented_default_is_the_parsers(action, monkeypatch):
    for name in list(os.environ):
        if name.startswith("CML_"):
            monkeypatch.delenv(name)
    action = next(a for a in run_actions(build_parser()) if a.dest == action.dest and
                  long_flag(a) == long_flag(action))  # rebuilt without any CML_ variable
    documented = documented_defaults()[long_flag(action)]
    word = WORDS.get(documented.lower(), documented)
    if word is None:
        assert action.default is None
    elif word == "off":  # --no-batching (a feature on unless the switch) or --leader-election (off unless it)
        assert (isinstance(action, argparse._StoreFalseAction) and action.default is True) or \
            (isinstance(action, argparse._StoreTrueAction) and action.default is False)
    elif word == "all":
        assert action.dest in ("namespaces", "all_namespaces") and not action.default
    elif word == "standalone":
        assert action.dest in ("peering", "standalone") and not action.default
    elif isinstance(action.default, (int, float)) and not isinstance(action.default, bool):
        assert float(word) == action.default, f"{long_flag(action)}: docs say {documented}, parser {action.default}"
    else:
        assert word == action.default, f"{long_flag(action)}: docs say {documented}, parser {action.default}"
