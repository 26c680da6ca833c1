"""Every ``tadkit ...`` command shown in the README and docs/ parses.

For each command line in a fenced code block: the sub-command path must exist
(its ``--help`` exits 0) and every ``--option`` used must be one of that
command's options. Documentation that drifts from the CLI fails here.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tadkit.cli import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        in_code = False
        pending = ""
        for line in doc.read_text().splitlines():
            if line.strip().startswith("```"):
                in_code = not in_code
                continue
            if not in_code:
                continue
            text = pending + line.strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            text = re.sub(r"^\$\s*", "", text)
            text = text.split(" #")[0].strip()
            if text.startswith("tadkit ") or text.startswith("torchrun ") and " tadkit " in text:
                found.append((doc.relative_to(REPO).as_posix(), text))
    return found


COMMANDS = _commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 5, "the docs should show the CLI in use"


@pytest.mark.parametrize("doc, line", COMMANDS, ids=[f"{d}:{l[:60]}" for d, l in COMMANDS])
def test_documented_command_parses(doc, line):
    words = shlex.split(line.replace("…", ""))
    if words[0] == "torchrun":
        words = words[words.index("tadkit"):]
    words = words[1:]
    if words and words[0] == "--":  # torchrun ... -m tadkit -- detect ... (keeps torchrun off tadkit's options)
        words.pop(0)
    cmd: click.Command = cli
    path = []
    while words and words[0] == "--debug":  # the group's own flag (accepted anywhere on the line)
        words.pop(0)
    while words and isinstance(cmd, click.Group) and not words[0].startswith("-"):
        sub = cmd.get_command(click.Context(cmd), words[0])
        assert sub is not None, f"{doc}: unknown command 'tadkit {' '.join(path + [words[0]])}'"
        cmd, path = sub, path + [words.pop(0)]
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, f"{doc}: 'tadkit {' '.join(path)} --help' failed: {result.output}"
    known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h", "--debug"}
    if cmd is cli:
        known |= {"--version"}
    for word in words:
        if word.startswith("--"):
            opt = word.split("=")[0]
            assert opt in known, f"{doc}: 'tadkit {' '.join(path)}' has no option {opt}"
