"""`streamfer up | down | status` as a user meets them: help texts, overrides, errors.

Nothing here starts a service: the commands either render help, fail on their settings
before starting anything, or look at a home that never ran a stack.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from streams.cli.app import app
from streams.cli.stack import stack_config
from streams.stack.config import (
    CONTROLLER_PORT_ENV,
    HOME_ENV,
    KAFKA_PORT_ENV,
    KAFKA_SECURE_PORT_ENV,
    REDIS_PORT_ENV,
    REDIS_TLS_PORT_ENV,
    StackConfig,
    StackError,
)

# The flag of each option and the variable it overrides.
UP_OPTIONS = {
    "--home": HOME_ENV,
    "--kafka-port": KAFKA_PORT_ENV,
    "--controller-port": CONTROLLER_PORT_ENV,
    "--redis-port": REDIS_PORT_ENV,
    "--redis-tls-port": REDIS_TLS_PORT_ENV,
    "--kafka-secure-port": KAFKA_SECURE_PORT_ENV,
}
COMMAND_OPTIONS = {"up": UP_OPTIONS, "down": {"--home": HOME_ENV}, "status": {"--home": HOME_ENV}}
# Switches that no variable sets.
COMMAND_FLAGS = {"up": {"--secure", "--redis-cluster", "--redis-replicas"}}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOX = re.compile(r"[│╭╮╰╯─]")


def _flat(text: str) -> str:
    """Help output as one line of words: no colours, box borders or wrapping."""
    return " ".join(_BOX.sub(" ", _ANSI.sub("", text)).split())


def _help(command: str) -> str:
    # 80 columns, a common terminal: narrow enough that Rich would cut long words.
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return _flat(result.output)


def _options(command: str) -> dict[str, str]:
    """Each option's flag and help text, as declared on the real command."""
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    return {
        param.opts[0]: param.help or ""
        for param in cmd.params
        if param.param_type_name == "option" and param.opts[0] != "--help"
    }


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_help_shows_every_option_with_its_help_and_variable(command: str) -> None:
    rendered = _help(command)
    declared = _options(command)
    assert set(declared) == set(COMMAND_OPTIONS[command]) | COMMAND_FLAGS.get(command, set())
    for flag, env in COMMAND_OPTIONS[command].items():
        assert flag in rendered
        assert env in declared[flag], f"{flag}'s help does not name {env}"
        # The whole help text survives rendering: no markup swallowed, no word cut short.
        assert " ".join(declared[flag].split()) in rendered, flag


def test_options_override_the_environment() -> None:
    env = {KAFKA_PORT_ENV: "29000", REDIS_PORT_ENV: "29001", HOME_ENV: "/tmp/from-env"}
    config = stack_config(env, home=Path("/tmp/from-cli"), controller_port=29002)
    assert config == StackConfig(
        home=Path("/tmp/from-cli"), kafka_port=29000, controller_port=29002, redis_port=29001
    )


def test_an_overridden_variable_is_not_read() -> None:
    config = stack_config({KAFKA_PORT_ENV: "not-a-port"}, kafka_port=29000)
    assert config.kafka_port == 29000


def test_a_bad_variable_is_named() -> None:
    with pytest.raises(StackError, match=CONTROLLER_PORT_ENV):
        stack_config({CONTROLLER_PORT_ENV: "70000"})


@pytest.mark.parametrize("port", [0, 65536])
def test_a_bad_option_is_named(port: int) -> None:
    with pytest.raises(StackError, match=f"--redis-port {port} is not a port number"):
        stack_config({}, redis_port=port)


def test_up_with_a_bad_variable_fails_in_one_line_naming_it(tmp_path: Path) -> None:
    env = {HOME_ENV: str(tmp_path / "home"), KAFKA_PORT_ENV: "abc"}
    result = CliRunner().invoke(app, ["up"], env=env)
    assert result.exit_code == 2
    assert result.stdout == ""  # nothing for `eval "$(streamfer up)"` to run
    assert KAFKA_PORT_ENV in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "home").exists()  # failed before starting anything


def test_up_with_clashing_ports_says_which_and_how_to_fix() -> None:
    result = CliRunner().invoke(app, ["up", "--kafka-port", "29500", "--redis-port", "29500"])
    assert result.exit_code == 2
    assert "ports must differ" in result.stderr
    assert KAFKA_PORT_ENV in result.stderr and REDIS_PORT_ENV in result.stderr


def test_status_of_a_home_that_never_ran_exits_1(tmp_path: Path) -> None:
    home = tmp_path / "never"
    env = {KAFKA_PORT_ENV: "29600", REDIS_PORT_ENV: "29601"}
    result = CliRunner().invoke(app, ["status", "--home", str(home)], env=env)
    assert result.exit_code == 1
    assert result.stdout.startswith("running=False bootstrap=127.0.0.1:29600 ")
    assert "redis=redis://127.0.0.1:29601/0" in result.stdout
