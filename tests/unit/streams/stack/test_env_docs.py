"""The README's table of environment variables matches the `STREAMFER_*` names the code uses.

The source tree is grepped, so a variable added anywhere (a service, the bench, compose, the
Makefile, a test) fails here until the table documents it, and a row nothing uses any more
fails too.
"""

from __future__ import annotations

import re
from pathlib import Path

from streams.stack.config import PORT_ENVS, StackConfig

REPO = Path(__file__).resolve().parents[4]
README = REPO / "README.md"
TABLE_HEADING = "### Configuration: a spec file plus the environment"
# Where the code lives: everything that can read a variable, not the prose under docs/.
SOURCES = (
    "streams",
    "features",
    "inference",
    "bench",
    "tests",
    "deploy",
    "examples",
    "Makefile",
    "docker-compose.yml",
    "Dockerfile",
)
SUFFIXES = {".py", ".yml", ".yaml", ".json", ".toml", ".lua", ".sh", ".properties", ".xml", ""}
# A name is upper-case words after the prefix; a trailing "_" marks a family (a prefix).
NAME = re.compile(r"\bSTREAMFER_[A-Z0-9_]+")
# A documented family such as `STREAMFER_RDKAFKA_<SETTING>` covers every name it prefixes.
DOC_NAME = re.compile(r"`(STREAMFER_[A-Z0-9_]+)(<[A-Z_]+>)?`")


def _source_files() -> list[Path]:
    files: list[Path] = []
    for entry in SOURCES:
        path = REPO / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts
            )
    return [f for f in files if f.resolve() != Path(__file__).resolve()]


def _used_names() -> dict[str, Path]:
    """Every STREAMFER_* name in the source tree, with one file that has it."""
    used: dict[str, Path] = {}
    for path in _source_files():
        for name in NAME.findall(path.read_text(errors="replace")):
            used.setdefault(name, path.relative_to(REPO))
    return used


def _table_rows() -> list[str]:
    text = README.read_text()
    assert TABLE_HEADING in text, f"README.md lost its section {TABLE_HEADING!r}"
    section = text.split(TABLE_HEADING, 1)[1].split("\n#", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def _documented() -> tuple[set[str], set[str]]:
    """The names in the table's first column: exact names, and family prefixes."""
    exact: set[str] = set()
    families: set[str] = set()
    for row in _table_rows():
        first_cell = row.split("|")[1]
        for name, placeholder in DOC_NAME.findall(first_cell):
            (families if placeholder else exact).add(name)
    return exact, families


def _covered(name: str, exact: set[str], families: set[str]) -> bool:
    if name in exact or any(name.startswith(f) for f in families):
        return True
    # A bare prefix in prose ("STREAMFER_COMPOSE_*") is covered by any row it starts.
    return name.endswith("_") and any(e.startswith(name) for e in exact | families)


def test_every_variable_the_code_uses_is_in_the_readme_table() -> None:
    exact, families = _documented()
    assert exact, "no documented variables found: did the table's format change?"
    missing = {
        name: str(path)
        for name, path in sorted(_used_names().items())
        if not _covered(name, exact, families)
    }
    assert not missing, f"add these to the README table under {TABLE_HEADING!r}: {missing}"


def test_every_variable_in_the_readme_table_is_used() -> None:
    exact, families = _documented()
    used = _used_names()
    stale = sorted(
        name
        for name in exact | families
        if not any(u == name or (name in families and u.startswith(name)) for u in used)
    )
    assert not stale, f"the README table documents variables nothing reads: {stale}"


def test_the_table_states_the_local_stacks_default_ports() -> None:
    rows = {row.split("|")[1].strip(" `"): row for row in _table_rows()}
    defaults = StackConfig()
    for field, env in PORT_ENVS.items():
        assert f"`{getattr(defaults, field)}`" in rows[env].split("|")[3], env
