"""Resident memory and CPU time of a process tree, read from /proc (Linux), for the benchmark commands."""

from __future__ import annotations

import os

__all__ = ["tree_usage"]


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
