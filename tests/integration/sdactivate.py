#!/usr/bin/env python3
"""Socket activation the way systemd does it, for the tests.

    sdactivate.py NAMES FD[,FD...] PROGRAM [ARGS...]

The caller (the test, which binds the sockets and keeps them open across
restarts, like systemd with a .socket unit) passes the descriptors FD... to
this process. They are moved to 3, 4, ... in the order given, LISTEN_FDS,
LISTEN_PID and LISTEN_FDNAMES (NAMES, colon-separated; "-" leaves it unset)
are set, and PROGRAM is exec'd: the pid stays this process's, so
LISTEN_PID matches the program's, as sd_listen_fds(3) requires.
"""
import fcntl
import os
import sys

FIRST_FD = 3  # SD_LISTEN_FDS_START


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    names, fds_arg, *argv = sys.argv[1:]
    fds = [int(f) for f in fds_arg.split(",")]
    # First above every target, then into place: a source may sit where
    # another one's target is.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, FIRST_FD + len(fds) + 64) for fd in fds]
    for fd in fds:
        if fd >= FIRST_FD + len(fds):
            os.close(fd)
    for i, fd in enumerate(high):
        os.dup2(fd, FIRST_FD + i, inheritable=True)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
    if names != "-":
        os.environ["LISTEN_FDNAMES"] = names
    else:
        os.environ.pop("LISTEN_FDNAMES", None)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
