"""Helpers shared by the benchmark scripts."""

from __future__ import annotations


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that across
    fork/exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
