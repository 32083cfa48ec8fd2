"""CPU accounting from /proc: a target's CPU time, and how busy other processes kept the machine.

`cpu_seconds` sums a process and its children (nginx's master and workers),
from schedstat's exact nanoseconds where there is one; `LoadMeter` measures
the CPUs other processes kept busy during a run (a noise indicator).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LoadMeter", "cpu_seconds", "machine_busy_seconds"]


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _on_cpu_seconds(pid: int) -> float:
    """CPU time of all threads of ``pid``: exact nanoseconds from schedstat where there is one.

    /proc/PID/stat's utime and stime are sampled at the clock tick, which
    misses much of a process that runs in bursts shorter than a tick.
    """
    total_ns, found = 0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            total_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue
    if found:
        return total_ns / 1e9
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` and its children (nginx: master and workers), or None."""
    if _stat_fields(pid) is None:
        return None
    total = _on_cpu_seconds(pid)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != pid:
            child = _stat_fields(int(entry.name))
            if child is not None and child[1] == str(pid):
                total += _on_cpu_seconds(int(entry.name))
    return total


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all CPUs), from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadMeter:
    """How many CPUs other processes kept busy while the benchmark ran (noise indicator)."""

    pids: Sequence[int]
    started: float = 0.0
    machine: float | None = None
    ours: float = 0.0

    def _ours(self) -> float:
        total = 0.0
        for pid in self.pids:
            total += cpu_seconds(pid) or 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # this script, wrk
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total

    def start(self) -> None:
        self.started, self.machine, self.ours = (
            time.monotonic(),
            machine_busy_seconds(),
            self._ours(),
        )

    def background_cpus(self) -> float | None:
        machine = machine_busy_seconds()
        if machine is None or self.machine is None:
            return None
        others = (machine - self.machine) - (self._ours() - self.ours)
        return max(0.0, others / (time.monotonic() - self.started))
