#!/usr/bin/env python3
"""Attributes the time from a timer's expiry to the measured code, per impl.

Runs `loopsvc-bench jitter` (by default at SCHED_FIFO 80 on CPU 1) under
`perf record` with four events on that CPU:

  timer:hrtimer_expire_entry   the sleeping thread's timer fires (hrtimer_wakeup)
  sched:sched_switch           the CPU switches to that thread
  raw_syscalls:sys_exit        its futex (loopsvc-condvar) or clock_nanosleep
                               (loopsvc-precise, clock_nanosleep) returns
  probe_loopsvc:lane_put       a uprobe on the bench's lane_put(), which ours
                               and the raw loop call right after reading the
                               clock: the end of the wake path

and splits each wake-up into the three spans between them:

  wake    expiry -> switch: the interrupt, the wake-up, leaving idle
  kernel  switch -> syscall return: what the sleeping call does on waking
  user    syscall return -> lane_put: the C library's epilogue, then (ours)
          the library's bookkeeping and run_once's clock read

Only the impls that sleep in futex or clock_nanosleep are attributed; the
other baselines run too and are left out. The uprobe's own trap adds the
same to every impl's user span. Prints the median and p99 of each span in
microseconds per impl, and ours over clock_nanosleep.

Needs root (or perf_event_paranoid <= -1), perf with uprobes, and the
bench built with symbols. Usage:
  bench/wakepath.py [--bench build/bench/loopsvc-bench] [--cpu 1]
                    [--prio 80] [--loops 2000] [--keep FILE]
Exits 0 with the table, 1 when perf cannot trace here (it says why).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

FUTEX, CLOCK_NANOSLEEP = 202, 230   # x86_64 syscall numbers
PROBE = "probe_loopsvc:lane_put"
LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def spans(script_text, cpu):
    """Per impl: lists of (wake, kernel, user) spans in ns."""
    out = {}
    expiry = None     # last hrtimer_wakeup expiry on the CPU
    cur = None        # the wake being followed: dict
    for line in script_text.splitlines():
        m = LINE.match(line)
        if not m or int(m.group(3)) != cpu:
            continue
        comm, tid, ts, event, rest = (m.group(1), int(m.group(2)),
                                      round(float(m.group(4)) * 1e9), m.group(5), m.group(6))
        if event == "timer:hrtimer_expire_entry":
            if "function=hrtimer_wakeup" in rest:
                expiry = ts
        elif event == "sched:sched_switch":
            nxt = re.search(r"next_comm=(.*?) next_pid=(\d+)", rest)
            if cur is not None and int(re.search(r"prev_pid=(\d+)", rest).group(1)) == cur["tid"]:
                cur = None   # switched out before the end: not a clean wake
            if nxt and expiry is not None and rest.startswith("prev_comm=swapper"):
                cur = {"tid": int(nxt.group(2)), "comm": nxt.group(1), "exp": expiry,
                       "sw": ts, "exit": None, "nr": None}
            expiry = None
        elif event == "raw_syscalls:sys_exit" and cur is not None and tid == cur["tid"]:
            if cur["exit"] is None:
                nr = int(re.search(r"NR (\d+)", rest).group(1))
                cur["exit"], cur["nr"] = ts, nr
        elif event == PROBE and cur is not None and tid == cur["tid"] and cur["exit"]:
            if cur["comm"] == "bench":
                impl = "loopsvc-condvar" if cur["nr"] == FUTEX else "loopsvc-precise"
            elif cur["nr"] == CLOCK_NANOSLEEP:
                impl = "clock_nanosleep"
            else:
                impl = None
            if impl:
                out.setdefault(impl, []).append(
                    (cur["sw"] - cur["exp"], cur["exit"] - cur["sw"], ts - cur["exit"]))
            cur = None
    return out


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="build/bench/loopsvc-bench")
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--prio", type=int, default=80)
    ap.add_argument("--loops", type=int, default=2000)
    ap.add_argument("--keep", help="also write perf script's text to this file")
    a = ap.parse_args()

    bench = os.path.abspath(a.bench)
    probe = run(["perf", "probe", "-q", "-x", bench, "--add", "lane_put"])
    if probe.returncode != 0 and "already exists" not in probe.stderr:
        print("wakepath: perf cannot place a uprobe here: " + probe.stderr.strip(),
              file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "perf.data")
            cmd = ["perf", "record", "-q", "-o", data, "-C", str(a.cpu),
                   "-e", "timer:hrtimer_expire_entry", "-e", "sched:sched_switch",
                   "-e", "raw_syscalls:sys_exit",
                   "--filter", "id == %d || id == %d" % (FUTEX, CLOCK_NANOSLEEP),
                   "-e", PROBE, "--", bench, "jitter", "--prio", str(a.prio),
                   "--cpu", str(a.cpu), "--mode", "both", "--loops", str(a.loops)]
            rec = run(cmd)
            if rec.returncode != 0:
                print("wakepath: perf record failed: " + rec.stderr.strip()[-400:],
                      file=sys.stderr)
                return 1
            script = run(["perf", "script", "-i", data, "--ns",
                          "-F", "comm,tid,cpu,time,event,trace"]).stdout
    finally:
        run(["perf", "probe", "-q", "--del", PROBE])
    if a.keep:
        with open(a.keep, "w") as f:
            f.write(script)
    res = spans(script, a.cpu)
    if "clock_nanosleep" not in res:
        print("wakepath: no clean wake-ups of the raw loop were traced", file=sys.stderr)
        return 1

    print("== wakepath: timer expiry to the measured code, jitter --prio %d --cpu %d, "
          "%d wakes per impl" % (a.prio, a.cpu, a.loops))
    print("   spans in us, median / p99 (perf record: hrtimer_expire_entry, sched_switch,")
    print("   sys_exit of futex or clock_nanosleep, uprobe on lane_put)")
    print("   %-16s %7s %15s %15s %15s %15s" % ("impl", "wakes", "wake", "kernel", "user",
                                                 "total"))
    table = {}
    for impl in ("loopsvc-condvar", "loopsvc-precise", "clock_nanosleep"):
        rows = res.get(impl, [])
        cols = [[r[i] for r in rows] for i in range(3)] + [[sum(r) for r in rows]]
        table[impl] = [(pct(c, 0.5), pct(c, 0.99)) for c in cols]
        print("   %-16s %7d" % (impl, len(rows)) + "".join(
            "  %6.2f / %6.2f" % (p50 / 1e3, p99 / 1e3) for p50, p99 in table[impl]))
    print("   ours - clock_nanosleep, medians in us:")
    for impl in ("loopsvc-condvar", "loopsvc-precise"):
        if res.get(impl):
            d = [table[impl][i][0] - table["clock_nanosleep"][i][0] for i in range(4)]
            print("   %-16s  wake %+.2f  kernel %+.2f  user %+.2f  total %+.2f"
                  % (impl, *(x / 1e3 for x in d)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
