"""Drives `quorumdb shell` through a pseudo-terminal, as a person would.

Usage: pty_session.py HISTORY_FILE COMMAND [ARGS...]

Steps (each waits for what the shell must print before typing on):
  1. the prompt `quorumdb@N=> `
  2. types the first line of a two-line statement; expects the continuation prompt `-> `
  3. types its second line; expects the result
  4. types `SELECT count(*) AS n FROM shell_pt<TAB>;` (tab completes the table name)
  5. Ctrl-D; expects the shell to exit 0
Prints the transcript with terminal escape sequences removed; exits non-zero with the
transcript on stderr if some step times out.
"""

import os
import pty
import re
import select
import sys
import time

history, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.environ["QUORUMDB_HISTORY"] = history
    os.environ["TERM"] = "xterm"
    os.execv(argv[0], argv)

transcript = b""


def clean(b):
    text = b.decode("utf-8", errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


def wait_for(pattern, count=1, timeout=30):
    global transcript
    deadline = time.time() + timeout
    while len(re.findall(pattern, clean(transcript))) < count:
        left = deadline - time.time()
        r, _, _ = select.select([fd], [], [], max(left, 0))
        if not r:
            sys.stderr.write(f"timed out waiting for {pattern!r}; transcript:\n{clean(transcript)}\n")
            sys.exit(3)
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            sys.stderr.write(f"the shell ended while waiting for {pattern!r}; transcript:\n{clean(transcript)}\n")
            sys.exit(4)
        transcript += chunk


def settle():
    """Reads what the shell prints within a short quiet period (the next prompt)."""
    global transcript
    while True:
        r, _, _ = select.select([fd], [], [], 0.3)
        if not r:
            return
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        transcript += chunk


wait_for(r"quorumdb@\d+=> ")
os.write(fd, b"SELECT 'multi' AS a,\r")
wait_for(r"quorumdb@\d+-> ")
os.write(fd, b"  2 AS b;\r")
wait_for(r"\(1 row\)")
settle()
os.write(fd, b"SELECT count(*) AS n FROM shell_pt\t;\r")
wait_for(r"\(1 row\)", count=2)
settle()
os.write(fd, b"\x04")
deadline = time.time() + 10
status = None
while time.time() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    settle()
else:
    sys.stderr.write(f"the shell did not exit on Ctrl-D; transcript:\n{clean(transcript)}\n")
    sys.exit(5)
settle()
sys.stdout.write(clean(transcript))
sys.exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 6)
