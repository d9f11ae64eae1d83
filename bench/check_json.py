#!/usr/bin/env python3
"""Checks the shape of `loopsvc-bench all --quick --json` read on stdin.

The input is JSON Lines: one object per subcommand (jitter, stop, scale,
drift, wake, observe). Only the shape is checked: keys, types, non-empty
results and sample counts above zero. Timings are never judged here; machines differ.
With arguments, the lines are those subcommands' instead, in that order:
`check_json.py lease-scale` checks one line of `loopsvc-bench lease-scale
--json`.
Exits 0 when the shape is right, 1 with a message naming the first fault.
"""
import json
import sys

ENVELOPE = ("bench", "interval_ns", "services", "prio", "load", "results", "ratios")
RESULT = ("impl", "samples", "min_ns", "mean_ns", "p50_ns", "p90_ns", "p99_ns",
          "p999_ns", "max_ns", "slack_ns")
IMPLS = {"loopsvc-condvar", "loopsvc-precise", "clock_nanosleep", "clock_nanosleep-b",
         "clock_nanosleep+work",
         "cyclictest",
         "timerfd", "posix_timer", "libuv", "rebase-on-start", "loopsvc-burst",
         "raw-wake-join", "loopsvc-stalled", "raw-cond-signal", "loopsvc-nohist",
         "loopsvc", "loopsvc-observed"}
PER_BENCH_RESULT = {
    "jitter": (),
    "stop": (),
    "scale": ("services", "cpu_ns_per_wake", "start_ns"),
    "drift": ("loops", "period_error_ppm", "period_error_measured_ppm",
              "final_lateness_ns", "min_gap_ns", "close_starts"),
    "wake": (),
    "observe": ("cpu_ns_per_wake",),
}
PER_BENCH_TOP = {
    "jitter": (),
    "stop": ("stop_p50_ns", "stop_p99_ns", "group_stop_ns", "start_ns"),
    # scale's cpu_ns_per_wake, sweep, skipped, limits and group_10k: check_scale
    "scale": ("start_ns", "rss_bytes_per_service", "group_reps"),
    "drift": (),
    "wake": (),
    "observe": ("baseline", "target_cpu_ratio", "target_met", "observer_calls"),
}


SCALE_SIDE = ("group_start_ns", "group_stop_ns", "rss_bytes_per_service")
SCALE_LIMITS = ("threads_max", "pid_max", "rlimit_nproc", "cgroup_pids_max", "max_map_count",
                "rlimit_as_bytes", "commit_limit_bytes", "room_threads")
SCALE_10K = ("services", "start_ns", "stop_ns", "rss_bytes_per_service", "threads_before",
             "threads_running", "threads_after", "fds_before", "fds_after",
             "rss_growth_from_cycle", "rss_growth_bytes")
SCALE_10K_CYCLE = ("start_ns", "stop_ns", "threads", "fds", "rss_bytes")
SCALE_10K_TARGETS = ("start_ns", "stop_ns", "rss_bytes_per_service", "leak_rss_bytes")
SCALE_10K_MET = ("start", "stop", "rss", "no_leak")

LEASE_SCALE_TOP = ("window_ns", "stack_size", "stores")
LEASE_SCALE_STORE_NUMBERS = (
    "lease_objects_per_replica", "ttl_ns", "held", "held_after_ns", "window_ns",
    "round_trips_per_s", "round_trips_per_s_replica1_alone", "round_trips_per_s_before",
    "standby_skips_per_s", "runs_elsewhere")
LEASE_SCALE_HANDOVER = (
    "services", "taken", "by_r2", "by_r3", "moved", "double_runs", "min_gap_from_r1_ns",
    "p50_ns", "max_ns", "p50_intervals", "max_intervals", "target_intervals")
LEASE_SCALE_IMPLS = {"pg": "loopsvc+pg", "redis": "loopsvc+redis"}


class ShapeError(Exception):
    pass


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def need(obj, key, where):
    if key not in obj:
        raise ShapeError(f"{where}: missing key '{key}'")
    return obj[key]


def need_number(obj, key, where):
    v = need(obj, key, where)
    if not is_number(v):
        raise ShapeError(f"{where}: '{key}' is {v!r}, not a number")
    return v


def need_number_or_null(obj, key, where):
    """A number, or null where the bench could not measure it."""
    v = need(obj, key, where)
    if v is not None and not is_number(v):
        raise ShapeError(f"{where}: '{key}' is {v!r}, not a number or null")
    return v


def need_object(obj, key, where):
    v = need(obj, key, where)
    if not isinstance(v, dict):
        raise ShapeError(f"{where}: '{key}' is {v!r}, not an object")
    return v


def need_numbers(obj, where, depth):
    """A non-empty object whose leaves, `depth` levels down, are numbers."""
    if not isinstance(obj, dict) or not obj:
        raise ShapeError(f"{where}: not a non-empty object")
    for k, v in obj.items():
        if depth > 1:
            need_numbers(v, f"{where}.{k}", depth - 1)
        elif not is_number(v):
            raise ShapeError(f"{where}.{k} is {v!r}, not a number")


def is_ours(impl):
    return impl == "loopsvc" or impl.startswith("loopsvc-")


def check_result(r, bench, where):
    if not isinstance(r, dict):
        raise ShapeError(f"{where}: not an object")
    impl = need(r, "impl", where)
    if impl not in IMPLS:
        raise ShapeError(f"{where}: unknown impl {impl!r}")
    where = f"{where} ({impl})"
    for key in RESULT[1:] + PER_BENCH_RESULT[bench]:
        # scale's CPU per wake is null where no window had all N running
        if bench == "scale" and key == "cpu_ns_per_wake":
            need_number_or_null(r, key, where)
        else:
            need_number(r, key, where)
    if r["samples"] <= 0:
        raise ShapeError(f"{where}: samples is {r['samples']}, not above 0")


def check_ratios(ratios, bench, where):
    if not isinstance(ratios, dict):
        raise ShapeError(f"{where}: 'ratios' is not an object")
    if bench == "jitter" and not ratios:
        raise ShapeError(f"{where}: 'ratios' is empty")
    if bench == "observe" and set(ratios) != {"loopsvc", "loopsvc-observed"}:
        raise ShapeError(f"{where}: ratios for {sorted(ratios)}, not for loopsvc "
                         "and loopsvc-observed")
    for impl, r in ratios.items():
        # scale's other raw loops have ratios too: the run's noise floor,
        # and the raw loop with work.
        if not is_ours(impl) and not (bench == "scale" and impl in
                                      ("clock_nanosleep-b", "clock_nanosleep+work")):
            raise ShapeError(f"{where}: ratio for {impl!r}, which is not ours")
        # scale nests one level more, keyed by the number of services
        leaves = r.values() if bench == "scale" else [r]
        for leaf in leaves:
            for key in ("p50", "p99") + (("cpu",) if bench == "observe" else ()):
                need_number(leaf, key, f"{where}: ratios.{impl}")


def check_scale(obj, results, where):
    """scale: per N, ours next to raw; the limits; the 10,000-service check."""
    cpu = need_object(obj, "cpu_ns_per_wake", where)
    for impl, per_n in cpu.items():
        if not isinstance(per_n, dict) or not per_n:
            raise ShapeError(f"{where}: cpu_ns_per_wake.{impl} is empty or not an object")
        for n in per_n:
            need_number_or_null(per_n, n, f"{where}: cpu_ns_per_wake.{impl}")
    sweep = need_object(obj, "sweep", where)
    skipped = need_object(obj, "skipped", where)
    if not sweep and not skipped:
        raise ShapeError(f"{where}: 'sweep' and 'skipped' are both empty")
    for n, why in skipped.items():
        if not n.isdigit() or not isinstance(why, str):
            raise ShapeError(f"{where}: skipped.{n} is {why!r}")
    for n, pt in sweep.items():
        w = f"{where}: sweep.{n}"
        if not n.isdigit() or not isinstance(pt, dict):
            raise ShapeError(f"{w}: not an object keyed by a number of services")
        need_number(pt, "interval_ns", w)
        need_number(pt, "wakes", w)
        for side in ("ours", "raw"):
            sd = need_object(pt, side, w)
            for key in ("impl", "cpu_impl"):
                if not isinstance(need(sd, key, f"{w}.{side}"), str):
                    raise ShapeError(f"{w}.{side}: '{key}' is not a string")
            for key in SCALE_SIDE:
                need_number(sd, key, f"{w}.{side}")
            need_number_or_null(sd, "cpu_ns_per_wake", f"{w}.{side}")
    for r in results:
        if str(r["services"]) not in sweep:
            raise ShapeError(f"{where}: N = {r['services']} has results but no sweep entry")
    limits = need_object(obj, "limits", where)
    for key in SCALE_LIMITS:
        need_number_or_null(limits, key, f"{where}: limits")
    need_number(limits, "stack_size", f"{where}: limits")
    need_number(limits, "overcommit_memory", f"{where}: limits")
    tightest = need(limits, "tightest", f"{where}: limits")
    if tightest is not None and not isinstance(tightest, str):
        raise ShapeError(f"{where}: limits.tightest is {tightest!r}")
    for n, t in need_object(obj, "targets_met", where).items():
        w = f"{where}: targets_met.{n}"
        if not n.isdigit() or not isinstance(t, dict):
            raise ShapeError(f"{w}: not an object keyed by a number of services")
        for key in ("p50", "p99", "cpu"):
            v = need(t, key, w)
            if not isinstance(v, bool) and not (key == "cpu" and v is None):
                raise ShapeError(f"{w}: '{key}' is {v!r}, not a boolean")
    g = need(obj, "group_10k", where)
    if g is None:
        if "10000" in sweep:
            raise ShapeError(f"{where}: N = 10000 measured, but group_10k is null")
        return
    w = f"{where}: group_10k"
    if not isinstance(g, dict):
        raise ShapeError(f"{w}: not an object or null")
    for key in SCALE_10K:
        need_number(g, key, w)
    cycles = need(g, "cycles", w)
    if not isinstance(cycles, list) or not cycles:
        raise ShapeError(f"{w}: 'cycles' is empty or not a list")
    for i, c in enumerate(cycles):
        if not isinstance(c, dict):
            raise ShapeError(f"{w}: cycles[{i}] is not an object")
        for key in SCALE_10K_CYCLE:
            need_number(c, key, f"{w}: cycles[{i}]")
    targets = need_object(g, "targets", w)
    for key in SCALE_10K_TARGETS:
        need_number(targets, key, f"{w}.targets")
    met = need_object(g, "met", w)
    for key in SCALE_10K_MET:
        if not isinstance(need(met, key, f"{w}.met"), bool):
            raise ShapeError(f"{w}.met: '{key}' is not a boolean")


def check_lease_scale(obj, where):
    """lease-scale: per store, a baseline and a leased result, a ratio, and
    the store's figures."""
    for key in ENVELOPE + LEASE_SCALE_TOP:
        need(obj, key, where)
    for key in ("interval_ns", "services", "window_ns", "stack_size"):
        need_number(obj, key, where)
    stores = obj["stores"]
    if not isinstance(stores, dict) or not stores:
        raise ShapeError(f"{where}: 'stores' is empty or not an object")
    results, ratios = obj["results"], obj["ratios"]
    if not isinstance(results, list) or not isinstance(ratios, dict):
        raise ShapeError(f"{where}: 'results' is not a list or 'ratios' not an object")
    for name, st in stores.items():
        w = f"{where}: stores.{name}"
        if name not in LEASE_SCALE_IMPLS or not isinstance(st, dict):
            raise ShapeError(f"{w}: unknown store, or not an object")
        impl = LEASE_SCALE_IMPLS[name]
        got = sorted(r.get("impl", "") for r in results
                     if isinstance(r, dict) and r.get("store") == name)
        if got != sorted(["loopsvc-condvar", impl]):
            raise ShapeError(f"{w}: results {got}, not loopsvc-condvar and {impl}")
        for r in results:
            if isinstance(r, dict) and r.get("store") == name:
                for key in RESULT[1:] + ("services",):
                    need_number(r, key, f"{w} result {r['impl']}")
                if r["samples"] <= 0:
                    raise ShapeError(f"{w} result {r['impl']}: no samples")
        for key in ("p50", "p99"):
            need_number(need(ratios, impl, f"{where}: ratios"), key, f"{where}: ratios.{impl}")
        for key in LEASE_SCALE_STORE_NUMBERS:
            need_number(st, key, w)
        conns = need(st, "connections", w)
        for key in ("r1", "r2", "r3"):
            v = need(conns, key, f"{w}.connections")
            if v is not None and not is_number(v):
                raise ShapeError(f"{w}.connections.{key} is {v!r}")
        v = need(st, "connections_other", w)
        if v is not None and not is_number(v):
            raise ShapeError(f"{w}: connections_other is {v!r}")
        ho = need(st, "handover", w)
        for key in LEASE_SCALE_HANDOVER:
            need_number(ho, key, f"{w}.handover")
        if not isinstance(need(ho, "target_met", f"{w}.handover"), bool):
            raise ShapeError(f"{w}.handover: target_met is not a boolean")
        if name == "pg" and not isinstance(need(st, "lateness_target_met", w), bool):
            raise ShapeError(f"{w}: lateness_target_met is not a boolean")
        if name == "redis":
            need_number(st, "commands_per_s", w)
    return "lease-scale"


def check_line(obj, where):
    if not isinstance(obj, dict):
        raise ShapeError(f"{where}: not a JSON object")
    bench = need(obj, "bench", where)
    if bench == "lease-scale":
        return check_lease_scale(obj, f"{where} ({bench})")
    if bench not in PER_BENCH_RESULT:
        raise ShapeError(f"{where}: unknown bench {bench!r}")
    where = f"{where} ({bench})"
    for key in ENVELOPE:
        need(obj, key, where)
    for key in ("interval_ns", "services", "prio", "load"):
        need_number(obj, key, where)
    results = obj["results"]
    if not isinstance(results, list) or not results:
        raise ShapeError(f"{where}: 'results' is empty or not a list")
    for i, r in enumerate(results):
        check_result(r, bench, f"{where}: results[{i}]")
    impls = {r["impl"] for r in results}
    if bench == "jitter" and "clock_nanosleep" not in impls:
        raise ShapeError(f"{where}: no clock_nanosleep baseline in the results")
    if not any(is_ours(i) for i in impls):
        raise ShapeError(f"{where}: no loopsvc result")
    check_ratios(obj["ratios"], bench, where)
    for key in PER_BENCH_TOP[bench]:
        v = need(obj, key, where)
        if key == "baseline":
            if v not in impls:
                raise ShapeError(f"{where}: baseline {v!r} is not in the results")
        elif key == "target_met":
            if not isinstance(v, bool):
                raise ShapeError(f"{where}: 'target_met' is {v!r}, not a boolean")
        elif key in ("stop_p50_ns", "stop_p99_ns", "target_cpu_ratio", "observer_calls",
                     "group_reps"):
            need_number(obj, key, where)
        else:
            need_numbers(v, f"{where}: {key}",
                         2 if bench == "scale" and key != "rss_bytes_per_service" else 1)
    if bench == "scale":
        check_scale(obj, results, where)
    return bench


def main():
    seen = []
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ShapeError(f"line {n}: not JSON ({e}): {line[:80]!r}")
        seen.append(check_line(obj, f"line {n}"))
    want = sys.argv[1:] or list(PER_BENCH_RESULT)
    if seen != want:
        raise ShapeError(f"expected one line each for {want} in that order, got {seen}")
    print(f"check_json: {len(seen)} benches, shape ok")


if __name__ == "__main__":
    try:
        main()
    except ShapeError as e:
        print(f"check_json: {e}", file=sys.stderr)
        sys.exit(1)
