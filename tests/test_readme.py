"""The README's runnable blocks run, in order, and print what the README shows
(tests/readme.py says how blocks are marked). Sessions that need the local cluster are in
tests/e2e."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from readme import Command, Shell, blocks, matches, parse, run, strip_comment, unmarked
from serverkit import start, stop

README = Path(__file__).resolve().parents[1] / "README.md"


def test_commands_comments_and_expected_output_are_read_as_a_shell_user_would() -> None:
    assert parse(["make setup && source .venv/bin/activate",
                  "batcomputer train data/ --registry r/   # crime 1.0.0",
                  "echo '# not a comment'"]) == [Command("batcomputer train data/ --registry r/"),
                                                 Command("echo '# not a comment'")]
    assert parse(["$ batcomputer versions r/ crime", "VERSION  CREATED", "1.0.0 …", "",
                  "$ true"]) == [Command("batcomputer versions r/ crime", ["VERSION  CREATED", "1.0.0 …"]),
                                 Command("true")]
    assert strip_comment('curl -d "{#1}" x # post') == 'curl -d "{#1}" x '
    assert parse(["$ curl -d '{", '    "id": 42}\'', '{"id": 42}']) == [
        Command("curl -d '{\n    \"id\": 42}'", ['{"id": 42}'])]
    assert matches("{\"caught\": 0.8…}", "{\"caught\": 0.8081021308898926}")
    assert not matches("publish 2.1.0 instead", "publish 3.0.0 instead")


def test_a_block_that_fails_or_prints_otherwise_names_its_line(tmp_path: Path) -> None:
    [block] = blocks("<!-- runs: x -->\n```\n$ echo hello\nhello world\n```\n")
    with pytest.raises(AssertionError, match="line 2: \\$ echo hello\nshould print: hello world"):
        run(block, tmp_path)
    [failing] = blocks("<!-- runs: x -->\n```bash\nfalse\n```\n")
    with pytest.raises(AssertionError, match="exited 1"):
        run(failing, tmp_path)


def test_every_shell_block_runs_or_says_why_not() -> None:
    assert unmarked(README.read_text()) == [], "mark them <!-- runs: … --> or <!-- not run: … -->"


def test_the_training_and_serving_chapters_run_as_written(tmp_path: Path) -> None:
    """Generate data, publish 1.0.0, 1.1.0, 1.1.1 and 2.0.0, list them, then the two
    refused versions, exactly as the README shows them; then serve 1.0.0 and send the
    README's requests: the same answers, to the digit."""
    runnable = blocks(README.read_text())
    chapter = [b for b in runnable if b.session == "training"]
    assert len(chapter) >= 2
    with Shell(tmp_path) as shell:  # one terminal for the chapter, as tests/readme.py says
        for block in chapter:
            shell.run(block)
    assert sorted(p.name for p in (tmp_path / "registry" / "crime").iterdir()) == [
        "1.0.0", "1.1.0", "1.1.1", "2.0.0"]
    served = start(str(tmp_path / "registry" / "crime" / "1.0.0"), tmp_path / "cache",
                   "--workers", "1")
    try:
        serving = [b for b in runnable if b.session == "serving"]
        assert serving
        with Shell(tmp_path, URL=served.url) as shell:
            for block in serving:
                shell.run(block)
    finally:
        stop(served)


def test_a_session_is_one_terminal_and_here_documents_belong_to_their_command(
        tmp_path: Path) -> None:
    text = ("<!-- runs: x -->\n```\n$ export GREETING=hello; cd /tmp\n"
            "$ cat <<'EOF'\n$ not a command\n${GREETING}\nEOF\nnot a command\n${GREETING}\n"
            "$ echo \"$GREETING from $(pwd)\"\nhello from /tmp\n"
            "$ sleep 600 >/dev/null 2>&1 &\n```\n")
    [block] = blocks(text)
    assert [c.line for c in block.commands][1] == "cat <<'EOF'\n$ not a command\n${GREETING}\nEOF"
    with Shell(tmp_path) as shell:
        shell.run(block)
        assert shell("echo $$")[0] == 0
        [sleeper] = shell("jobs -p")[1]
    # Ending the session ends what it left running.
    assert wait_gone(int(sleeper))


def wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
