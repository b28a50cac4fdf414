"""Processes as /proc shows them (Linux): whether one is alive, its descendants, the memory and CPU time of a tree."""

from __future__ import annotations

import os

__all__ = ["alive", "descendants", "die_with_parent", "stop", "tree_usage"]


def tree_usage(root: int) -> tuple[int, float]:
    """(resident bytes, user + system CPU seconds) of a process and all its live descendants."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    children: dict[int, list[int]] = {}
    usage: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        usage[pid] = (int(fields[21]) * page, (int(fields[11]) + int(fields[12])) / tick)
    rss, cpu, todo = 0, 0.0, [root]
    while todo:
        pid = todo.pop()
        r, c = usage.get(pid, (0, 0.0))
        rss, cpu = rss + r, cpu + c
        todo += children.get(pid, [])
    return rss, cpu


def alive(pid: int) -> bool:
    """Whether a process is running: not gone and not a zombie waiting to be reaped (without /proc: the kernel's
    answer to signal 0, which counts zombies as alive)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def descendants(root: int) -> set[int]:
    """The pids of a process's live children, their children, and so on."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(name))
            except OSError:
                continue
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def die_with_parent():
    """A `preexec_fn` for servers a process starts (the S3 endpoint, a Beam job service): the kernel sends the
    child SIGTERM when its parent dies, however it died (a SIGKILL or an abort skips every `finally`: a test
    process that aborted left its moto server running). Linux only; elsewhere None (no preexec_fn)."""
    import ctypes
    import ctypes.util
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl  # looked up here,
    pr_set_pdeathsig = 1  # in the parent: the child only calls it

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return preexec


def stop(proc, timeout: float = 10.0) -> None:
    """End a child process (a `subprocess.Popen`): SIGTERM, then SIGKILL if it has not exited within `timeout`
    seconds; reaped either way."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
