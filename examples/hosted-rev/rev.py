#!/usr/bin/env python3
"""rev: a hosted Nearby plugin, in plain Python.

A hosted plugin runs on its host node only. Every presenter who opens it
(`nearby open rev@HOST`) gets a process of this program of their own: what
they type arrives on stdin, what it prints goes back to them. stderr goes to
the host's log (`nearby logs rev` there).

Each line is answered with the line reversed. Lines starting with "!" are
commands:

  !whoami     who this session is for, on which host, which version
  !exit N     exit with status N (0 ends the session normally)
  !spam N     print N bytes of output at once (for the output-buffer limit)
  !err TEXT   write TEXT to stderr (the host's log)
"""
import os
import sys


def reply(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main():
    env = os.environ.get
    session = env("NEARBY_SESSION", "?")
    presenter = env("NEARBY_PRESENTER_NAME", "?")
    sys.stderr.write("rev %s: session for %s\n" % (env("NEARBY_VERSION", "?"), presenter))
    sys.stderr.flush()
    while True:
        line = sys.stdin.readline()
        if not line:  # the presenter closed its input
            return 0
        line = line.rstrip("\r\n")
        if line == "!whoami":
            reply("session %s presenter %s (%s) host %s version %s pid %d" % (
                session, presenter, env("NEARBY_PRESENTER_ID", "?"),
                env("NEARBY_NODE_NAME", "?"), env("NEARBY_VERSION", "?"), os.getpid()))
        elif line.startswith("!exit"):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 else 0
        elif line.startswith("!spam"):
            n = int(line.split()[1])
            chunk = ("x" * 63 + "\n").encode()
            out = sys.stdout.buffer
            while n > 0:
                out.write(chunk[:n])
                n -= len(chunk)
            out.flush()
        elif line.startswith("!err "):
            sys.stderr.write(line[5:] + "\n")
            sys.stderr.flush()
        else:
            reply(line[::-1])


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(1)
