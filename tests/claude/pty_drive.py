#!/usr/bin/env python3
"""Runs a command on a pseudo terminal, as an admin at a terminal would, and drives it.

Usage: pty_drive.py STEPS_JSON OUT_JSON -- CMD...

STEPS_JSON is a list of steps, in order:
  {"expect": "REGEX", "timeout": SECS}  wait until the output so far matches
  {"send": "TEXT"}                       type TEXT (e.g. "\\u001d" for ^])
  {"sleep": SECS}
Then waits (at most 60 s) for the command to end and writes OUT_JSON:
  {"output": "...", "status": EXIT_CODE or null, "failed_step": N or null}
"""

import json
import os
import pty
import re
import select
import sys
import time


def main():
    steps = json.loads(sys.argv[1])
    out_path = sys.argv[2]
    cmd = sys.argv[sys.argv.index("--") + 1 :]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.setdefault("TERM", "xterm-256color")
        os.execvp(cmd[0], cmd)
    output = b""

    def read_for(secs):
        nonlocal output
        end = time.monotonic() + secs
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return True
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return False
            if not chunk:
                return False
            output += chunk

    failed = None
    for i, step in enumerate(steps):
        if "expect" in step:
            pattern = re.compile(step["expect"].encode())
            end = time.monotonic() + step.get("timeout", 60)
            alive = True
            while not pattern.search(output) and time.monotonic() < end and alive:
                alive = read_for(min(0.2, max(0.0, end - time.monotonic())))
            if not pattern.search(output):
                failed = i
                break
        elif "send" in step:
            os.write(fd, step["send"].encode())
        elif "sleep" in step:
            read_for(step["sleep"])
    status = None
    end = time.monotonic() + 60
    while time.monotonic() < end:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
            break
        read_for(0.2)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    read_for(0.2)
    with open(out_path, "w") as f:
        json.dump(
            {
                "output": output.decode("utf-8", "replace"),
                "status": status,
                "failed_step": failed,
            },
            f,
        )


main()
