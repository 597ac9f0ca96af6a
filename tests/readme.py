"""Run the README's shell blocks as a newcomer would: in order, in one folder per session.

A fenced block runs when the line before it is ``<!-- runs: SESSION -->``; the blocks of a
session share a fresh folder and run in README order. In a block:
- ``$ command`` lines are commands, and the lines after one, up to the next ``$``, are
  what it must print (each line, in order; ``…`` stands for any text). A command that
  shows an ``error:`` line may exit non-zero; every other command must exit 0.
- Without ``$``, every line is a command and its output is not checked.
- ``# comments`` at the end of a command line are dropped; so is a line that only sets up
  the environment (``make setup``, ``source .venv/bin/activate``): the test runs with this
  checkout's virtualenv first on PATH, as those lines would leave it.
A shell block that does not run says why in the README itself
(``<!-- not run: WHY -->``); `unmarked` finds those that say neither.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

MARK_RE: Final = re.compile(r"^<!-- runs: (?P<session>[a-z0-9-]+) -->$")
SKIP_RE: Final = re.compile(r"^<!-- not run: (?P<why>.+) -->$")
SETUP_RE: Final = re.compile(r"^(make setup|source \.venv/bin/activate)( && |$)")


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    session: str
    start: int
    """Line number of the opening fence (1-based)."""
    commands: list[Command]


def blocks(text: str) -> list[Block]:
    """The README's runnable blocks, in order."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        match = MARK_RE.match(line.strip())
        if not match or i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
            continue
        body = []
        for inner in lines[i + 2:]:
            if inner.startswith("```"):
                break
            body.append(inner)
        out.append(Block(match.group("session"), i + 2, parse(body)))
    return out


def parse(body: list[str]) -> list[Command]:
    prompted = any(line.startswith("$ ") for line in body)
    commands: list[Command] = []
    joined: list[str] = []
    for line in body:  # a command continued with a trailing backslash is one line
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + line.strip()
        else:
            joined.append(line)
    for line in joined:
        if prompted and not line.startswith("$ "):
            if commands and line.strip():
                commands[-1].expected.append(line)
            continue
        command = strip_comment(line.removeprefix("$ ") if prompted else line).strip()
        while SETUP_RE.match(command):
            command = SETUP_RE.sub("", command, count=1).strip()
        if command:
            commands.append(Command(command))
    return commands


def strip_comment(line: str) -> str:
    """The command without a trailing ``# comment`` (a # outside quotes after a space)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def matches(expected: str, actual: str) -> bool:
    """``expected`` in ``actual``, where … stands for any text."""
    position = 0
    for part in expected.split("…"):
        found = actual.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


def run(block: Block, folder: Path, timeout: float = 600, **variables: str) -> None:
    """Run every command of ``block`` in ``folder`` (with ``variables`` in the environment,
    e.g. URL); AssertionError names the first that fails, with the README line and what
    it printed."""
    env = {**os.environ, **variables,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in block.commands:
        done = subprocess.run(["bash", "-c", command.line], cwd=folder, env=env, text=True,
                              capture_output=True, timeout=timeout)
        output = (done.stdout + done.stderr).splitlines()
        where = f"README.md block at line {block.start}: $ {command.line}"
        shows_error = any("error:" in line for line in command.expected)
        assert done.returncode == 0 or shows_error, \
            f"{where}\nexited {done.returncode}:\n{done.stdout}{done.stderr}"
        position = 0
        for line in command.expected:
            hit = next((i for i in range(position, len(output)) if matches(line, output[i])), None)
            assert hit is not None, f"{where}\nshould print: {line}\nprinted:\n" + "\n".join(output)
            position = hit + 1


def unmarked(text: str) -> list[int]:
    """Line numbers of shell blocks (```bash, or ``$`` prompts) marked neither ``runs``
    nor ``not run``."""
    lines = text.splitlines()
    out = []
    inside = False
    for i, line in enumerate(lines):
        fence = line.strip().startswith("```")
        if fence and inside:
            inside = False
            continue
        if not fence:
            continue
        inside = True
        shell = line.strip() == "```bash" or (i + 1 < len(lines)
                                               and lines[i + 1].strip().startswith("$ "))
        before = lines[i - 1].strip() if i else ""
        if shell and not (MARK_RE.match(before) or SKIP_RE.match(before)):
            out.append(i + 1)
    return out
