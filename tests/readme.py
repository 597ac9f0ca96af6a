"""Run the README's shell blocks as a newcomer would: in order, in one terminal per session.

A fenced block runs when the line before it is ``<!-- runs: SESSION -->``. The blocks of a
session run in README order in one bash (`Shell`), started in a fresh folder: what one
command exports, a ``cd`` and background jobs last until the session ends, as in a
terminal. In a block:
- ``$ command`` lines are commands, and the lines after one, up to the next ``$``, are
  what it must print (each line, in order; ``…`` stands for any text). A command that
  shows an ``error:`` line (``Error from server:`` too) may exit non-zero; every other
  command must exit 0.
- Without ``$``, every line is a command and its output is not checked.
- A here-document (``<<'EOF'`` … ``EOF``) and a quoted argument over several lines belong
  to their command.
- ``# comments`` at the end of a command line are dropped; so is a line that only sets up
  the checkout (``make setup``, ``source .venv/bin/activate``, ``make images``): the test
  runs with this checkout's virtualenv first on PATH, and the images built, as those lines
  would leave it.
A shell block that does not run says why in the README itself
(``<!-- not run: WHY -->``); `unmarked` finds those that say neither.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

MARK_RE: Final = re.compile(r"^<!-- runs: (?P<session>[a-z0-9-]+) -->$")
SKIP_RE: Final = re.compile(r"^<!-- not run: (?P<why>.+) -->$")
SETUP_RE: Final = re.compile(r"^(make setup|make images|source \.venv/bin/activate)( && |$)")
HEREDOC_RE: Final = re.compile(r"<<-?\s*(['\"]?)(?P<word>\w+)\1")


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
        if not match or i + 1 >= len(lines) or not lines[i + 1].lstrip().startswith("```"):
            continue
        indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())  # a block inside a list item
        body = []
        for inner in lines[i + 2:]:
            if inner.lstrip().startswith("```"):
                break
            body.append(inner[indent:] if not inner[:indent].strip() else inner.lstrip())
        out.append(Block(match.group("session"), i + 2, parse(body)))
    return out


def parse(body: list[str]) -> list[Command]:
    prompted = any(line.startswith("$ ") for line in body)
    commands: list[Command] = []
    joined: list[str] = []
    document: list[str] = []
    """The rest of a here-document still to be read, and its end word."""
    for line in body:
        if document:  # inside a here-document: its lines, as they are
            joined[-1] += "\n" + line
            if line.strip() == document[0]:
                document = []
            continue
        if joined and open_quote(joined[-1]) and (not prompted or joined[-1].startswith("$ ")):
            joined[-1] += "\n" + line  # a quoted argument over several lines
        elif joined and joined[-1].endswith("\\"):  # continued with a trailing backslash
            joined[-1] = joined[-1][:-1].rstrip() + " " + line.strip()
        else:
            joined.append(line)
        if (match := HEREDOC_RE.search(strip_comment(line))) and (
                not prompted or joined[-1].startswith("$ ")):
            document = [match.group("word")]
    for line in joined:
        if prompted and not line.startswith("$ "):
            if commands and line.strip():
                commands[-1].expected.append(line)
            continue
        first, _, rest = line.partition("\n")
        command = strip_comment(first.removeprefix("$ ") if prompted else first).strip()
        while SETUP_RE.match(command):
            command = SETUP_RE.sub("", command, count=1).strip()
        if command:
            commands.append(Command(command + ("\n" + rest if rest else "")))
    return commands


def open_quote(text: str) -> str:
    """The quote (' or ") that ``text`` leaves open, as bash reads it; "" if none."""
    quote, escaped = "", False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
    return quote


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


class Shell:
    """One bash for a session, as a terminal: commands run one after another in it, each
    with its output (stdout and stderr, as they interleave) and exit status; ``stop``
    ends it and every process it left running in the background."""

    def __init__(self, folder: Path, **variables: str) -> None:
        env = {**os.environ, **variables,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.marker = f"__readme_done_{secrets.token_hex(8)}__"
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=folder, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def __call__(self, command: str, timeout: float = 600) -> tuple[int, list[str]]:
        """Run ``command``; its exit status and what it printed."""
        assert self.proc.stdin is not None
        # Its standard input is not the session's (which carries the next commands).
        self.proc.stdin.write(f"{{\n{command}\n}} </dev/null\n"
                              f"printf '\\n%s %d\\n' {self.marker} $?\n")
        self.proc.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"still running after {timeout:g}s: {command}\n"
                                     + "\n".join(output)) from None
            if line is None:
                raise AssertionError(f"the shell ended during: {command}\n" + "\n".join(output))
            if line.startswith(self.marker + " "):
                if output and output[-1] == "":
                    output.pop()  # the newline printed before the marker
                return int(line.split()[1]), output
            output.append(line)

    def run(self, block: Block, timeout: float = 600) -> None:
        """Run every command of ``block``; AssertionError names the first that fails, with
        the README line and what it printed."""
        for command in block.commands:
            status, output = self(command.line, timeout)
            where = f"README.md block at line {block.start}: $ {command.line}"
            shows_error = any("error:" in line or line.startswith("Error from server")
                              for line in command.expected)
            assert status == 0 or shows_error, \
                f"{where}\nexited {status}:\n" + "\n".join(output)
            position = 0
            for line in command.expected:
                hit = next((i for i in range(position, len(output)) if matches(line, output[i])),
                           None)
                assert hit is not None, f"{where}\nshould print: {line}\nprinted:\n" + "\n".join(output)
                position = hit + 1

    def stop(self) -> None:
        """End the shell and whatever it started in the background (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def run(block: Block, folder: Path, timeout: float = 600, **variables: str) -> None:
    """Run ``block`` in a shell of its own in ``folder`` (with ``variables`` in its
    environment, e.g. URL)."""
    with Shell(folder, **variables) as shell:
        shell.run(block, timeout)


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
