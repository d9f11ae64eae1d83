#!/usr/bin/env python3
"""Leases against a real server, with replica processes.

usage: lease_test.py --backend pg|redis --replica PATH [--figures FILE]
                     [--verbose] [scenario ...]

Starts `replica` processes that share one service under a lease held in
PostgreSQL (LSVC_TEST_PG, a libpq conninfo of a server where this may
create a database; a lease is a row of table loopsvc_lease) or Redis
(LSVC_TEST_REDIS, an address; a lease is the key loopsvc:lease:<ns>:<name>,
its token the counter loopsvc:token:..., its past the hash
loopsvc:state:...), kills them, cuts their connections, takes the server
away through a proxy, partitions the holder from it, stops one (SIGSTOP)
in the middle of a run, runs one with its clock off, makes the holder's
runs fail, makes the store lose its records, and checks the runs they
record: no two runs overlap, no due point runs twice, the lease moves on
when its holder goes, and every run has a fencing token that never goes
back and rises with every new holding, which a fenced sink accepts
(check_tokens) and, for the run of a holder that was stopped too long or
of a token the store lost, refuses. One lease object also serves many
services of a replica over one connection (s8_many_services). Exits 77 (a
skip) when the variable is not set. LSVC_TEST_PG_AUTH, when set, is a
conninfo (without password) of a role that must log in with a password,
for the wrong-password case.

Every scenario's line reports, where they mean something: overlapped run
pairs, stale fenced writes accepted (always 0) and refused, points run
twice (0 but where a lost store lets two replicas hold), points skipped
in the span of the runs, and handover times. --figures FILE writes them
as JSON.

Every wait is bounded; on a failure the logs of the scenario's replicas
are printed. Python's time.monotonic_ns() reads CLOCK_MONOTONIC, the
clock the replicas record their times on; a run's point is its due time
on the wall clock (CLOCK_REALTIME, time.time_ns()) over the interval,
less the replica's offset (replica.c).
"""
import argparse
import collections
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

# The helpers the Python tests share, in test/.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import Failure, check, free_port, wait_until  # noqa: E402

SKIP = 77
INTERVAL = 0.05
IV_NS = int(INTERVAL * 1e9)
MS = 1_000_000
NAME = "lease-probe"
# How long a replica may take to end after SIGTERM: a lease call in
# progress (its timeout) plus the stop itself, with room for a loaded CI
# machine and sanitizers.
STOP_BOUND = 5.0
# Scheduling noise allowed on top of a bound measured in intervals.
SLACK_NS = 20 * MS
# lsvc_group_set_orphaned_after's default, and health.c's floor.
ORPHANED_AFTER = 5
ORPHANED_MIN_NS = 1000 * MS


def now_ns():
    return time.monotonic_ns()


def wall_minus_mono():
    """CLOCK_REALTIME - CLOCK_MONOTONIC now, in ns, read between two
    readings of the monotonic clock (the narrowest of a few tries)."""
    best = None
    for _ in range(5):
        m0 = time.monotonic_ns()
        w = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, w - (m0 + m1) // 2)
    return best[1]


# Taken once: the two clocks run at one rate (no step in a test's time).
WALL_MINUS_MONO = wall_minus_mono()


def point_ns(point, offset_ns=0):
    """When logical point `point` is due, on CLOCK_MONOTONIC, on the grid of
    a replica with that offset."""
    return point * IV_NS + offset_ns - WALL_MINUS_MONO


def sleep_to_phase(frac, offset_ns=0):
    """Sleeps to the next moment `frac` of an interval past a point of the
    grid with that offset: between two due points, for an event that must
    not race a run."""
    at = (frac * IV_NS + offset_ns) % IV_NS
    wall = time.time_ns()
    time.sleep(((at - wall) % IV_NS) / 1e9)


def log_time_ns(line):
    """The CLOCK_MONOTONIC time of a log line, from its timestamp (local
    wall-clock time, ms)."""
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
    return int(stamp.timestamp() * 1e9) - WALL_MINUS_MONO


def check_sink(backend, ns, runs, row=None):
    """The sink of ns (its row or hash, or `row` when read already) holds
    the last run's write and the highest token."""
    last = max(runs, key=lambda r: r.start)
    fence, replica, point = row or backend.sink(ns)
    check(fence == max(r.token for r in runs) and
          (replica, point) == (last.replica, last.point),
          f"the sink holds token {fence} of replica {replica} at point "
          f"{point}, not the last run's: {last}")


class Run:
    """One run a replica recorded: its logical point and due time
    (CLOCK_MONOTONIC), its fencing token (0: none), its holding (the
    replica's lease_changes then) and what the fenced sink said of its
    write ("failed": a run made to fail, which wrote nothing)."""

    def __init__(self, replica, point, due, start, end, token, holding, sink):
        self.replica, self.point, self.due = int(replica), int(point), int(due)
        self.start, self.end = int(start), int(end)
        self.token, self.holding, self.sink = int(token), int(holding), sink

    def __repr__(self):
        return (f"run(replica {self.replica}, point {self.point}, "
                f"{self.start / 1e9:.3f}..{self.end / 1e9:.3f} s, "
                f"token {self.token}, holding {self.holding}, sink {self.sink})")


# --- Checks ----------------------------------------------------------------

def check_no_overlap(runs):
    latest = None  # the run that ends last among those seen
    for r in sorted(runs, key=lambda r: r.start):
        if latest is not None and r.start < latest.end:
            raise Failure(f"two runs overlap: {latest} and {r}")
        if latest is None or r.end > latest.end:
            latest = r


def check_points_once(runs):
    seen = {}
    for r in runs:
        if r.point in seen:
            raise Failure(f"point {r.point} ran twice: {seen[r.point]} and {r}")
        seen[r.point] = r


def holdings(runs):
    """The holdings of the lease, oldest first: (replica, holding) ->
    their runs, in the order of their first runs."""
    out = {}
    for r in sorted(runs, key=lambda r: r.start):
        out.setdefault((r.replica, r.holding), []).append(r)
    return out


def check_tokens(runs, retake_keeps_token):
    """Every run has a token, and the sink took its write; tokens never go
    back in the order runs began; the runs of one holding share one; a new
    holding's is above every earlier holding's. retake_keeps_token: a
    replica that lost the lease only by its own count (a lost reply, a
    connection the server ended) and takes its own lease back is still
    the store's one holding, with the same token, as long as no other
    replica held it in between."""
    check(runs, "no run was recorded at all")
    none = [r for r in runs if r.token <= 0]
    check(not none, f"runs without a fencing token: {none[:3]}")
    refused = [r for r in runs if r.sink != "ok"]
    check(not refused, f"the fenced sink did not take the writes of "
          f"{len(refused)} runs: {refused[:3]}")
    ordered = sorted(runs, key=lambda r: r.start)
    for a, b in zip(ordered, ordered[1:]):
        check(b.token >= a.token, f"the token went back from {a} to {b}")
    top = {}  # replica -> the highest token of its earlier holdings
    for (rid, _), hruns in holdings(runs).items():
        tokens = {r.token for r in hruns}
        check(len(tokens) == 1, f"one holding of replica {rid} ran with "
              f"tokens {sorted(tokens)}: {hruns[:3]}")
        token = hruns[0].token
        others = max((t for o, t in top.items() if o != rid), default=0)
        mine = top.get(rid, 0)
        check(token > others, f"a holding of replica {rid} got token {token}, "
              f"not above {others} of another replica's earlier holding: "
              f"{hruns[0]}")
        # token > others: no other replica held it since this one's token.
        if not (retake_keeps_token and token == mine):
            check(token > mine, f"a new holding of replica {rid} got token "
                  f"{token}, not above its own earlier {mine}: {hruns[0]}")
        top[rid] = max(mine, token)


def token_note(runs):
    """The tokens, as token@replica, in the order runs began, each once
    per stretch of runs that share both, for the report."""
    seq = []
    for r in sorted(runs, key=lambda r: r.start):
        if not seq or seq[-1] != (r.token, r.replica):
            seq.append((r.token, r.replica))
    return "tokens " + " ".join(f"{k}@{rid}" for k, rid in seq[:10]) + \
        (" ..." if len(seq) > 10 else "")


def check_replica_logs(replicas):
    for r in replicas:
        off = [l for l in r.stderr().splitlines() if "off the grid" in l]
        check(not off, f"replica {r.rid} ran off its grid of due points, "
              f"so points cannot be told apart: {off[0] if off else ''}")
        bare = [l for l in r.stderr().splitlines() if "without a fencing token" in l]
        check(not bare, f"replica {r.rid} ran without a token: {bare[:1]}")


def check_safe(runs, replicas=(), backend=None, ns=None):
    check_replica_logs(replicas)
    check(runs, "no run was recorded at all")
    check_no_overlap(runs)
    check_points_once(runs)
    check_fence(runs)
    if backend is not None:
        check_tokens(runs, backend.RETAKE_KEEPS_TOKEN)
        check_sink(backend, ns, runs)


def overlapping_pairs(runs):
    """The pairs of runs that were in progress at one time."""
    pairs = []
    ordered = sorted(runs, key=lambda r: r.start)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.start >= a.end:
                break
            pairs.append((a, b))
    return pairs


def stale_accepted(runs):
    """The writes the fenced sink took although a write with a higher
    token had been taken before them. A run writes just before its end, so
    the order of the ends is the order of the writes."""
    out, top = [], None
    for r in sorted((r for r in runs if r.sink == "ok"), key=lambda r: r.end):
        if top is not None and r.token < top.token:
            out.append((r, top))
        if top is None or r.token > top.token:
            top = r
    return out


def written_twice(runs):
    """The points that the fenced sink took more than one write of."""
    seen, twice = {}, []
    for r in sorted(runs, key=lambda r: r.end):
        if r.sink != "ok":
            continue
        if r.point in seen:
            twice.append((seen[r.point], r))
        seen[r.point] = r
    return twice


def check_fence(runs):
    """What must hold whatever the lease did: the sink took no write of a
    token below one it had taken, and no point twice."""
    stale = stale_accepted(runs)
    check(not stale, f"the sink took {len(stale)} stale writes, the first "
          f"{stale[0][0]} after {stale[0][1]}" if stale else "")
    twice = written_twice(runs)
    check(not twice, f"{len(twice)} points were written twice: {twice[:2]}")


def run_twice(runs):
    """The points that more than one run ran."""
    return sorted(p for p, n in collections.Counter(r.point for r in runs).items()
                  if n > 1)


def figures(runs, handovers_ns=(), span_runs=None):
    """The figures of a scenario's report: overlapped run pairs, stale
    writes accepted and refused, points run twice, points skipped (between
    the first point and the last of span_runs, all runs by default) and
    handover times."""
    span_runs = runs if span_runs is None else span_runs
    points = {r.point for r in span_runs}
    span = max(points) - min(points) + 1 if points else 0
    return {
        "overlaps": len(overlapping_pairs(runs)),
        "stale_accepted": len(stale_accepted(runs)),
        "refused": sum(r.sink == "stale" for r in runs),
        "twice": len(run_twice(runs)),
        "skipped": span - len(points),
        "span": span,
        "handover_ms": [round(h / 1e6) for h in handovers_ns],
    }


def add_figures(a, b):
    """Two sets of figures (of two namespaces) as one."""
    out = {k: a[k] + b[k] for k in ("overlaps", "stale_accepted", "refused",
                                    "twice", "skipped", "span")}
    out["handover_ms"] = a["handover_ms"] + b["handover_ms"]
    return out


def figures_note(f):
    note = (f"overlaps {f['overlaps']}; stale writes accepted "
            f"{f['stale_accepted']}, refused {f['refused']}; points run twice "
            f"{f['twice']}; skipped {f['skipped']} of {f['span']}")
    if f["handover_ms"]:
        note += "; handover " + ", ".join(f"{h} ms" for h in f["handover_ms"])
    return note


def gaps(runs, t0_ns=0):
    """The runs of points missing between the first run and the last, as
    "from..to ms (after t0_ns) between replicas a and b", for a failure
    message."""
    by_point = {r.point: r for r in runs}
    ordered = sorted(by_point)
    out = []
    for a, b in zip(ordered, ordered[1:]):
        if b - a > 1:
            out.append(f"{(point_ns(a + 1) - t0_ns) / 1e6:.0f}.."
                       f"{(point_ns(b - 1) - t0_ns) / 1e6:.0f} ms between replicas "
                       f"{by_point[a].replica} and {by_point[b].replica}")
    return "; ".join(out[:6]) or "none"


def hang_stop_bound_ns(ttl_ns, model, timeout):
    """How long after the server hangs its holder may still begin runs."""
    if model == "store":
        # Runs do not wait for the server: the holder stops when a renewal
        # (every third of the TTL at the most) has timed out, at the latest.
        return ttl_ns // 3 + int(timeout * 1e9) + IV_NS + SLACK_NS
    # Every run waits for its confirmation: none begins once the server
    # hangs (but for scheduling noise).
    return 5 * MS


def pause_takeover_bound_ns(ttl_ns):
    """How long after its holder is stopped another replica takes a lease
    over: the store drops it a TTL after its last renewal, which came
    before the stop; the next due point of another replica takes it."""
    return ttl_ns + 3 * IV_NS


def first_after(runs, t_ns, exclude=None):
    later = [r for r in runs if r.start > t_ns and r.replica != exclude]
    return min(later, key=lambda r: r.start) if later else None


# --- A replica process -----------------------------------------------------

class Replica:
    def __init__(self, test, rid, address, ns, timeout=None, record=True,
                 seconds=0, services=1, slow_file=None, slow_work=None,
                 offset=0.0, fail=False, fail_file=None):
        self.test, self.rid, self.ns = test, rid, ns
        self.offset_ns = int(round(offset * 1e9))
        base = os.path.join(test.tmp, f"{ns.replace('/', '_')}-{rid}")
        self.err_path, self.out_path = base + ".err", base + ".out"
        cmd = [test.replica, "--backend", test.backend.name, "--address", address,
               "--ns", ns, "--id", str(rid), "--interval", str(INTERVAL),
               "--seconds", str(seconds), "--name", NAME]
        if record:
            cmd += ["--record", test.backend.record_address]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
        if services != 1:
            cmd += ["--services", str(services)]
        if slow_file is not None:
            cmd += ["--slow-file", slow_file]
        if slow_work is not None:
            cmd += ["--slow-work", str(slow_work)]
        if offset:
            cmd += ["--offset", repr(offset)]
        if fail:
            cmd += ["--fail", "1"]
        if fail_file is not None:
            cmd += ["--fail-file", fail_file]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err)
        test.scenario_replicas.append(self)

    def alive(self):
        return self.proc.poll() is None

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def stdout(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def lines(self, level, logger=f"loopsvc.{NAME}"):
        tag = f"| {level} | {logger} -"
        return [l for l in self.stderr().splitlines() if tag in l]

    def store_lines(self, level):
        """The lease store's lines of this level: on the library's own
        logger "loopsvc", for every service that shares the store, naming
        the store ("... PostgreSQL ... for the leases ...", "... Redis at
        <address> ... for the leases ...")."""
        b = self.test.backend
        return [l for l in self.lines(level, "loopsvc")
                if "for the leases" in l and b.STORE_WORDS in l]

    def wait_started(self, seconds=5.0):
        """Waits for the service's start (its INFO line): it asks for its
        lease at its first due point, within an interval."""
        wait_until(lambda: any("started: runs every" in l
                               for l in self.lines("INFO")), seconds,
                   f"replica {self.rid} to start")

    def warnings(self):
        """The lease store's WARNINGs."""
        return self.store_lines("WARNING")

    def lease_ttl(self):
        """(ns, model) that the replica said at its start: how long the
        store keeps a lease past its last renewal, and "store" (renewed in
        the background), "per-run" (before each run) or "session"."""
        pat = re.compile(r"^replica \d+: lease ttl ([0-9.]+) s, (\S+)$", re.M)
        m = wait_until(lambda: pat.search(self.stderr()), 5.0,
                       f"replica {self.rid} to say its lease's time to live")
        return int(float(m.group(1)) * 1e9), m.group(2)

    def stats(self):
        m = re.search(r"^stats (.*)$", self.stdout(), re.M)
        check(m, f"replica {self.rid} printed no stats")
        return {k: int(v) for k, v in (f.split("=") for f in m.group(1).split())}

    def terminate(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, bound=STOP_BOUND):
        """Waits for the end that a SIGTERM asked for; returns seconds."""
        t0 = time.monotonic()
        try:
            self.proc.wait(bound)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure(f"replica {self.rid} did not stop within {bound} s "
                          "of SIGTERM")
        check(self.proc.returncode == 0,
              f"replica {self.rid} exited with {self.proc.returncode}")
        return time.monotonic() - t0

    def stop(self, bound=STOP_BOUND):
        self.terminate()
        return self.wait_stopped(bound)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def pause(self):
        """SIGSTOP: every thread stops where it is, sessions stay open."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)


# --- A proxy that can take the server away --------------------------------

class Proxy:
    """127.0.0.1:port forwarded to the server. down() cuts every connection
    and closes the port (connections are refused), up() opens it again, and
    freeze() keeps connections open, and accepts new ones, but forwards
    nothing, not even the end of a connection: a server that hangs, or a
    network partition; thaw() heals it."""

    def __init__(self, upstream, port=None):
        self.upstream = upstream  # ("unix", path) or ("tcp", (host, port))
        self.port = port or free_port()
        self.lock = threading.Lock()  # protects socks and listener
        self.socks = set()
        self.orphans = set()  # server ends whose clients left while frozen
        self.listener = None
        self.frozen = False

    def up(self, frozen=False):
        self.frozen = frozen
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.05)
        with self.lock:
            self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def freeze(self):
        self.frozen = True

    def thaw(self):
        """The partition heals: forwards again, and the server's ends of
        connections their clients closed meanwhile are closed now (as a
        peer's RST would tell it). Connections accepted while frozen have
        no server behind them, and stay dead until their clients close
        them."""
        with self.lock:
            orphans, self.orphans = self.orphans, set()
        self.frozen = False
        for s in orphans:
            self._close(s)

    def down(self):
        with self.lock:
            s, self.listener = self.listener, None
            socks, self.socks = self.socks, set()
        if s is not None:
            s.close()
        for c in socks:
            self._close(c)

    def _accept(self, s):
        while True:
            with self.lock:
                if self.listener is not s:
                    return
            try:
                c, _ = s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            u = None
            if not self.frozen:
                try:
                    if self.upstream[0] == "unix":
                        u = socket.socket(socket.AF_UNIX)
                    else:
                        u = socket.socket()
                    u.settimeout(2)
                    u.connect(self.upstream[1])
                    u.settimeout(None)
                except OSError:
                    self._close(c)
                    continue
            with self.lock:
                self.socks.add(c)
                if u is not None:
                    self.socks.add(u)
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            if u is not None:
                threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _pump(self, src, dst):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if self.frozen or dst is None:
                continue
            try:
                dst.sendall(data)
            except OSError:
                break
        self._close(src)
        if dst is not None:
            if self.frozen:
                # Nothing passes, not even the end of a connection: the
                # other side hears of it when the partition heals.
                with self.lock:
                    self.orphans.add(dst)
            else:
                self._close(dst)

    @staticmethod
    def _close(s):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


# --- PostgreSQL ------------------------------------------------------------

def with_params(conninfo, **params):
    """conninfo with params added; libpq takes the last of a repeated
    keyword, and a URI's query parameters over its other parts."""
    if re.match(r"postgres(ql)?://", conninfo):
        sep = "&" if "?" in conninfo else "?"
        return conninfo + sep + urllib.parse.urlencode(params)
    quoted = (k + "='" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
              for k, v in params.items())
    return conninfo + " " + " ".join(quoted)


def pg_key(ns, name):
    """lsvc_pg_lease_key, as loopsvc-pg.h defines it."""
    h = 0xcbf29ce484222325
    for b in ns.encode() + b"\0" + name.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


class Pg:
    name = "pg"
    # The store of the leases logs on the library's own logger, for every
    # service that shares it ("... PostgreSQL for the leases ..."); the
    # per-service lines (holds / lost) stay on the service's.
    STORE_WORDS = "PostgreSQL"
    # The lease's timeout where a handover waits for the row to expire (a
    # TTL of 3 timeouts, 0.6 s), and where it does not: the server sees a
    # killed holder's session end, and frees its rows at once.
    SHORT_TIMEOUT = 0.2
    KILL_TIMEOUT = None
    DB = "lsvc_lease_test"
    TABLE = "loopsvc_lease"

    def __init__(self, conninfo):
        self.base = conninfo
        self.env = dict(os.environ, PGCONNECT_TIMEOUT="5")
        self.psql_bin = shutil.which("psql")
        if self.psql_bin is None:
            raise Failure("psql is not installed")
        exists = self.psql(self.base, f"SELECT 1 FROM pg_database WHERE datname = '{self.DB}'")
        if not exists.strip():
            self.psql(self.base, f"CREATE DATABASE {self.DB}")
        self.db = with_params(conninfo, dbname=self.DB)
        self.psql(self.db, "CREATE TABLE IF NOT EXISTS lsvc_lease_runs ("
                  "ns text NOT NULL, replica int NOT NULL, point bigint NOT NULL, "
                  "start_ns bigint NOT NULL, end_ns bigint NOT NULL); "
                  # Columns a database of an older test lacks.
                  "ALTER TABLE lsvc_lease_runs "
                  "ADD COLUMN IF NOT EXISTS token bigint NOT NULL DEFAULT 0, "
                  "ADD COLUMN IF NOT EXISTS holding bigint NOT NULL DEFAULT 0, "
                  "ADD COLUMN IF NOT EXISTS sink text NOT NULL DEFAULT '', "
                  "ADD COLUMN IF NOT EXISTS due_ns bigint NOT NULL DEFAULT 0; "
                  "CREATE TABLE IF NOT EXISTS lsvc_lease_sink (ns text PRIMARY KEY, "
                  "fence bigint NOT NULL, replica int, point bigint)")
        self.lease_address = self.db
        self.record_address = self.db
        addr, port, sockdirs = self.psql(
            self.db, "SELECT coalesce(host(inet_server_addr()), ''), "
            "current_setting('port'), current_setting('unix_socket_directories')"
        ).strip().split("|")
        if addr:
            self.upstream = ("tcp", (addr, int(port)))
        else:
            first = sockdirs.split(",")[0].strip()
            self.upstream = ("unix", f"{first}/.s.PGSQL.{port}")

    def psql(self, conninfo, sql, timeout=20):
        try:
            out = subprocess.run(
                [self.psql_bin, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                 "-d", conninfo, "-c", sql],
                capture_output=True, text=True, timeout=timeout, env=self.env,
                stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Failure(f"psql took more than {timeout} s: {sql}")
        if out.returncode != 0:
            raise Failure(f"psql failed ({out.returncode}) on {sql}: {out.stderr}")
        return out.stdout

    def lease_address_for(self, rid, app=None):
        # Names the session in pg_stat_activity, so that the holder of a
        # lease row (its pid) can be told from the records' holder.
        return with_params(self.db, application_name=app or f"lsvc-replica-{rid}")

    def lease_rows(self, ns, names):
        """name -> the row of its lease in loopsvc_lease, joined with the
        holder's session: (token, holder, pid, live, expired,
        application_name, session_alive), or no entry without a row."""
        keys = {pg_key(ns, n): n for n in names}
        out = self.psql(self.db, "SELECT l.key, l.token, coalesce(l.holder, ''), "
                        "coalesce(l.pid, 0), l.expires IS NOT NULL, "
                        "coalesce(l.expires < now(), false), "
                        "coalesce(a.application_name, ''), a.pid IS NOT NULL "
                        f"FROM {self.TABLE} l LEFT JOIN pg_stat_activity a "
                        "ON a.pid = l.pid WHERE l.key IN "
                        f"({', '.join(str(k) for k in keys)})")
        rows = {}
        for line in out.splitlines():
            if not line:
                continue
            key, token, holder, pid, live, expired, app, alive = line.split("|")
            rows[keys[int(key)]] = dict(
                token=int(token), holder=holder, pid=int(pid), live=live == "t",
                expired=expired == "t", app=app, alive=alive == "t")
        return rows

    def lease_holder(self, ns, name=NAME):
        """The holder ("host:pid:random") of the lease while it is live, or
        None."""
        row = self.lease_rows(ns, [name]).get(name)
        return row["holder"] if row and row["live"] and not row["expired"] else None

    def held_by(self, ns, names, reps, apps):
        """Replica id -> the (name, session pid) of the leases whose live
        rows name it; checks that each row's session is its replica's lease
        session (apps: id -> application_name), and that a replica holds
        all its leases through one session."""
        by_pid = {str(r.proc.pid): r for r in reps}
        held = {r.rid: [] for r in reps}
        for name, row in self.lease_rows(ns, names).items():
            if not row["live"] or row["expired"]:
                continue
            owner = by_pid.get(row["holder"].split(":")[1])
            check(owner is not None, f"the lease of {name} is held by "
                  f"{row['holder']!r}, none of the replicas")
            check(row["alive"] and row["app"] == apps[owner.rid],
                  f"the lease of {name}, held by replica {owner.rid}, names a "
                  f"session of {row['app']!r} (pid {row['pid']}, alive "
                  f"{row['alive']}), not that replica's")
            held[owner.rid].append((name, row["pid"]))
        for rid, rows in held.items():
            pids = {pid for _, pid in rows}
            check(len(pids) <= 1, f"replica {rid} holds its leases through "
                  f"{len(pids)} sessions: {sorted(pids)}")
        return held

    def connections(self, reps, apps):
        """Replica id -> (its lease sessions, its recording sessions) now;
        apps: id -> the application_name of its lease sessions."""
        record = {r.rid: f"lsvc-record-{r.rid}-{r.proc.pid}" for r in reps}
        sess = self.sessions(list(apps.values()) + list(record.values()))
        return {r.rid: (sess[apps[r.rid]], sess[record[r.rid]]) for r in reps}

    def success_age_ms(self, ns, name=NAME):
        """How long ago, by the server's clock, the store says a run last
        succeeded on any replica (loopsvc_lease.last_success); None for
        never (or no row)."""
        out = self.psql(self.db, "SELECT coalesce((extract(epoch FROM now() - "
                        "last_success) * 1000)::bigint::text, 'null') FROM "
                        f"{self.TABLE} WHERE key = {pg_key(ns, name)}").strip()
        return None if out in ("", "null") else int(out)

    def lose_records(self, ns, name=NAME):
        """What a store that lost its data shows: the lease's row is gone
        (its token, its holder, its past)."""
        out = self.psql(self.db, f"DELETE FROM {self.TABLE} WHERE key = "
                        f"{pg_key(ns, name)} RETURNING token").strip()
        check(out, "the lease had no row to delete")
        return "DELETE of its row"

    def set_token(self, ns, token, name=NAME):
        """The remedy after a loss: the store's token set above the highest
        any sink holds."""
        self.psql(self.db, f"UPDATE {self.TABLE} SET token = {int(token)} "
                  f"WHERE key = {pg_key(ns, name)}")

    def sessions(self, apps):
        """application_name -> its sessions in pg_stat_activity now."""
        names = ", ".join(f"'{a}'" for a in apps)
        out = self.psql(self.db, "SELECT application_name, count(*) FROM "
                        f"pg_stat_activity WHERE application_name IN ({names}) "
                        "GROUP BY 1")
        got = dict.fromkeys(apps, 0)
        for line in out.splitlines():
            if line:
                app, n = line.split("|")
                got[app] = int(n)
        return got

    def address_via(self, port):
        return with_params(self.db, host="127.0.0.1", hostaddr="127.0.0.1",
                           port=str(port))

    def runs(self, ns):
        out = self.psql(self.db, "SELECT replica, point, due_ns, start_ns, "
                        "end_ns, token, holding, sink FROM lsvc_lease_runs WHERE ns = "
                        f"'{ns}' ORDER BY start_ns")
        return [Run(*line.split("|")) for line in out.splitlines() if line]

    def runs_under(self, ns):
        """ns/i -> its runs, for the namespaces of a replica's services, in
        one query."""
        out = self.psql(self.db, "SELECT ns, replica, point, due_ns, start_ns, "
                        "end_ns, token, holding, sink FROM lsvc_lease_runs WHERE ns "
                        f"LIKE '{ns}/%' ORDER BY start_ns")
        runs = {}
        for line in out.splitlines():
            if line:
                name, *fields = line.split("|")
                runs.setdefault(name, []).append(Run(*fields))
        return runs

    def sink(self, ns):
        out = self.psql(self.db, "SELECT fence, replica, point FROM "
                        f"lsvc_lease_sink WHERE ns = '{ns}'").strip()
        check(out, f"the sink has no row for {ns}")
        return [int(x) for x in out.split("|")]

    def sinks_under(self, ns):
        """ns/i -> (fence, replica, point) of its sink row."""
        out = self.psql(self.db, "SELECT ns, fence, coalesce(replica, -1), "
                        "coalesce(point, -1) FROM lsvc_lease_sink WHERE ns "
                        f"LIKE '{ns}/%'")
        return {f[0]: [int(x) for x in f[1:]]
                for f in (line.split("|") for line in out.splitlines() if line)}

    def kill_lease_connection(self, ns, holder):
        """Ends the session that holds the lease, by the pid of its row in
        loopsvc_lease; checks that the row names holder (its process, and
        its session by application_name) and is live. Returns the token of
        the holding it ended."""
        key = pg_key(ns, NAME)
        out = self.psql(self.db, "SELECT l.pid, a.application_name, l.holder, "
                        "l.token, pg_terminate_backend(l.pid) FROM "
                        f"{self.TABLE} l JOIN pg_stat_activity a ON a.pid = l.pid "
                        f"WHERE l.key = {key} AND l.expires >= now()")
        rows = [line.split("|") for line in out.splitlines() if line]
        check(len(rows) == 1, f"{self.TABLE} shows {len(rows)} live holdings of "
              f"the lease with a session, not 1")
        pid, app, who, token, killed = rows[0]
        check(app == f"lsvc-replica-{holder.rid}", f"the lease is held by the "
              f"session of {app!r}, but the last run was replica {holder.rid}'s")
        check(who.split(":")[1:2] == [str(holder.proc.pid)],
              f"the lease's holder is {who!r}, not the process of replica "
              f"{holder.rid} (pid {holder.proc.pid})")
        check(killed == "t", f"pg_terminate_backend({pid}) said {killed!r}")
        return int(token)

    def cleanup(self, prefix, lease_names):
        keys = ", ".join(str(pg_key(ns, n)) for ns, names in lease_names.items()
                         for n in names) or "0"
        sql = (f"DELETE FROM lsvc_lease_runs WHERE ns LIKE '{prefix}%'; "
               f"DELETE FROM lsvc_lease_sink WHERE ns LIKE '{prefix}%'; ")
        tables = self.psql(self.db, f"SELECT to_regclass('{self.TABLE}') IS NOT "
                           "NULL, to_regclass('loopsvc_lease_token') IS NOT NULL")
        has_new, has_old = (x == "t" for x in tables.strip().split("|"))
        if has_new:
            sql += f"DELETE FROM {self.TABLE} WHERE key IN ({keys}); "
        if has_old:
            sql += f"DELETE FROM loopsvc_lease_token WHERE key IN ({keys}); "
        self.psql(self.db, sql)

    def bad_addresses(self):
        return ["host=127.0.0.1 port", "postgresql://[::1", "nosuchkey=1"]

    def refused_address(self, port):
        return self.address_via(port)

    def rejected_logins(self):
        """(address, what the WARNING must say) pairs that the server
        turns away."""
        cases = [(with_params(self.db, user="lsvc_no_such_role"),
                  'role "lsvc_no_such_role" does not exist')]
        auth = os.environ.get("LSVC_TEST_PG_AUTH")
        if auth:
            cases.append((with_params(auth, password="wrong-password"),
                          "password authentication failed"))
        else:
            print("LSVC_TEST_PG_AUTH is not set: the wrong-password case is left out")
        return cases

    # The lease's own words, which the checks below look for.
    RECONNECTED = "again for the leases"
    # A take of a row that is still this lease object's (its session ended,
    # its holding lost here, no other holder since) keeps the token; a take
    # from any other holder bumps it.
    RETAKE_KEEPS_TOKEN = True

    def kill_takeover_bound_ns(self, ttl_ns):
        # After its holder dies, its row is free as soon as the server sees
        # the session end; a take then finds that holding had not ended,
        # and leaves the due point it was taken at (a holder may have begun
        # it): the next one runs. 1.5 intervals for a kill half way between
        # two points.
        return 2 * IV_NS

    def lost_conn_takeover_bound_ns(self, ttl_ns):
        # The server ends the session it lost: as for a kill.
        return 2 * IV_NS


# --- Redis -----------------------------------------------------------------

class RespError(Exception):
    pass


class Resp:
    """Just enough of the Redis protocol for the checks."""

    def __init__(self, target, password=None, timeout=5):
        if target[0] == "unix":
            self.sock = socket.socket(socket.AF_UNIX)
        else:
            self.sock = socket.socket()
        self.sock.settimeout(timeout)
        self.sock.connect(target[1])
        self.buf = b""
        if password:
            self.cmd("AUTH", password)
        self.cmd("CLIENT", "SETNAME", "lsvc-test-driver")

    def close(self):
        self.sock.close()

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise RespError("the server closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            data = self.sock.recv(65536)
            if not data:
                raise RespError("the server closed the connection")
            self.buf += data
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RespError(f"cannot parse {line!r}")


def parse_redis_address(address):
    """(target, password) for the forms of loopsvc-redis.h."""
    rest, password = address, None
    if rest.startswith("redis://"):
        rest = rest[len("redis://"):]
        if "@" in rest:
            auth, rest = rest.rsplit("@", 1)
            password = auth.split(":", 1)[1] if ":" in auth else auth
    if rest.startswith("unix:"):
        return ("unix", rest[len("unix:"):]), password
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "6379")
    return ("tcp", (host.strip("[]"), int(port))), password


class Redis:
    name = "redis"
    # The store of the leases logs on the library's own logger, for every
    # service that shares it ("... Redis at <address> for the leases ...").
    STORE_WORDS = "Redis at "
    # The lease's timeout (a TTL of 3 timeouts, 0.3 s) where a handover
    # waits for a key to lapse: Redis cannot see a dead holder.
    SHORT_TIMEOUT = 0.1
    KILL_TIMEOUT = 0.1
    PREFIXES = ("loopsvc:lease:", "loopsvc:token:", "loopsvc:state:")

    def __init__(self, address):
        self.lease_address = address
        self.record_address = address
        self.upstream, self.password = parse_redis_address(address)
        self.conn = Resp(self.upstream, self.password)
        check(self.conn.cmd("PING") == "PONG", "Redis does not answer PING")

    def lease_address_for(self, rid, app=None):
        return self.lease_address

    def address_via(self, port):
        if self.password:
            return f"redis://:{urllib.parse.quote(self.password)}@127.0.0.1:{port}"
        return f"127.0.0.1:{port}"

    @staticmethod
    def keys(ns, name=NAME):
        """The lease's key, its token counter and the hash of its past."""
        return [f"{p}{ns}:{name}" for p in Redis.PREFIXES]

    def runs(self, ns):
        items = self.conn.cmd("LRANGE", f"lsvc-test:runs:{ns}", 0, -1)
        return sorted((Run(*i.split(":")) for i in items), key=lambda r: r.start)

    def runs_under(self, ns):
        """ns/i -> its runs, for the namespaces of a replica's services."""
        runs = {}
        for key in self.conn.cmd("KEYS", f"lsvc-test:runs:{ns}/*"):
            sub = key[len("lsvc-test:runs:"):]
            runs[sub] = self.runs(sub)
        return runs

    def sink(self, ns):
        h = self.conn.cmd("HGETALL", f"lsvc-test:sink:{ns}") or []
        got = dict(zip(h[::2], h[1::2]))
        check(got, f"the sink has no hash for {ns}")
        return [int(got.get(k, -1)) for k in ("fence", "replica", "point")]

    def sinks_under(self, ns):
        """ns/i -> (fence, replica, point) of its sink hash."""
        return {key[len("lsvc-test:sink:"):]: self.sink(key[len("lsvc-test:sink:"):])
                for key in self.conn.cmd("KEYS", f"lsvc-test:sink:{ns}/*")}

    def clients(self):
        out = []
        for line in self.conn.cmd("CLIENT", "LIST").splitlines():
            out.append(dict(f.split("=", 1) for f in line.split() if "=" in f))
        return out

    @staticmethod
    def holder_pid(holder):
        """The process of a holder name "host:pid:random"."""
        return holder.split(":")[1] if holder and holder.count(":") >= 2 else None

    def lease_holder(self, ns, name=NAME):
        """The holder ("host:pid:random") the lease's key names, or None
        when there is no key (free, or lapsed)."""
        return self.conn.cmd("GET", self.keys(ns, name)[0])

    def lease_client(self, holder, clients=None):
        """The connections of the lease object named holder (its name is
        "loopsvc-lease:<holder>", CLIENT SETNAME)."""
        name = "loopsvc-lease:" + holder.replace(" ", "_")
        return [c for c in (clients or self.clients()) if c.get("name") == name]

    def held_by(self, ns, names, reps, apps=None):
        """Replica id -> the (name, holder) of the leases whose keys name
        it; checks that each names its replica's process, that the
        connection of that lease object is open, and that a replica holds
        all its leases through one lease object."""
        by_pid = {str(r.proc.pid): r for r in reps}
        clients = self.clients()
        held = {r.rid: [] for r in reps}
        for name in names:
            holder = self.lease_holder(ns, name)
            if holder is None:
                continue
            owner = by_pid.get(self.holder_pid(holder))
            check(owner is not None, f"the lease of {name} is held by "
                  f"{holder!r}, none of the replicas")
            check(self.lease_client(holder, clients), f"the lease of {name}, "
                  f"held by replica {owner.rid} as {holder!r}, has no open "
                  "connection of that name")
            held[owner.rid].append((name, holder))
        for rid, rows in held.items():
            objs = {h for _, h in rows}
            check(len(objs) <= 1, f"replica {rid} holds its leases through "
                  f"{len(objs)} lease objects: {sorted(objs)}")
        return held

    def connections(self, reps, apps=None):
        """Replica id -> (its lease connections, its recording
        connections) now, by their names in CLIENT LIST."""
        clients = self.clients()
        out = {}
        for r in reps:
            names = [c.get("name", "") for c in clients]
            lease = sum(1 for n in names if n.startswith("loopsvc-lease:") and
                        self.holder_pid(n[len("loopsvc-lease:"):]) == str(r.proc.pid))
            record = names.count(f"lsvc-record-{r.rid}-{r.proc.pid}")
            out[r.rid] = (lease, record)
        return out

    def success_age_ms(self, ns, name=NAME):
        """How long ago, by the server's clock, the store says a run last
        succeeded on any replica (field "success" of the state hash, ms);
        None for never (or no hash)."""
        v = self.conn.cmd("HGET", self.keys(ns, name)[2], "success")
        if v is None:
            return None
        sec, usec = self.conn.cmd("TIME")
        return int(sec) * 1000 + int(usec) // 1000 - int(v)

    def lose_records(self, ns, name=NAME):
        """What an instance restarted without persistence shows: the
        lease's key, its token counter and its past are gone."""
        gone = self.conn.cmd("DEL", *self.keys(ns, name))
        check(gone >= 2, f"only {gone} of the lease's keys were there to delete")
        return "DEL of its key, token counter and state hash"

    def set_token(self, ns, token, name=NAME):
        """The remedy after a loss: the counter set above the highest token
        any sink holds."""
        self.conn.cmd("SET", self.keys(ns, name)[1], int(token))

    def kill_lease_connection(self, ns, holder):
        """Ends the connection of the lease object that holds the lease
        (CLIENT KILL ID), found by the name it gave it, which names the
        holder its key holds; checks that this is the process of replica
        holder. Returns the token of the holding it ended (the counter)."""
        who = self.lease_holder(ns)
        check(who is not None, "the lease has no key: nothing holds it")
        check(self.holder_pid(who) == str(holder.proc.pid),
              f"the lease's key names {who!r}, not the process of replica "
              f"{holder.rid} (pid {holder.proc.pid}), which ran last")
        conns = self.lease_client(who)
        check(len(conns) == 1, f"CLIENT LIST shows {len(conns)} connections "
              f"of the lease object {who!r}, not 1")
        token = int(self.conn.cmd("GET", self.keys(ns)[1]))
        killed = self.conn.cmd("CLIENT", "KILL", "ID", conns[0]["id"])
        check(killed == 1, f"CLIENT KILL ID {conns[0]['id']} said {killed!r}")
        return token

    def cleanup(self, prefix, lease_names):
        patterns = [f"lsvc-test:runs:{prefix}*", f"lsvc-test:sink:{prefix}*"]
        patterns += [f"{p}{prefix}*" for p in self.PREFIXES]
        for pattern in patterns:
            keys = self.conn.cmd("KEYS", pattern)
            if keys:
                self.conn.cmd("DEL", *keys)

    def bad_addresses(self):
        return ["127.0.0.1:notaport", "127.0.0.1:99999", "redis://127.0.0.1:12ab"]

    def refused_address(self, port):
        return f"127.0.0.1:{port}"

    def rejected_logins(self):
        # With no password set, Redis refuses AUTH with one; with one,
        # this one is wrong.
        target = "unix:" + self.upstream[1] if self.upstream[0] == "unix" else \
            f"{self.upstream[1][0]}:{self.upstream[1][1]}"
        return [(f"redis://:lsvc-wrong-password@{target}", "AUTH")]

    RECONNECTED = "again for the leases"
    # A replica that takes its own key back (its connection lost, the key
    # not lapsed yet) is still the one holding, and keeps its token: no
    # other replica can take a key that has not lapsed.
    RETAKE_KEEPS_TOKEN = True

    def kill_takeover_bound_ns(self, ttl_ns):
        # Redis cannot see a dead holder: its key lapses a TTL after its
        # last renewal, which came before the kill; the next due point of
        # another replica takes it, or, within half an interval of the
        # lapse, the one after.
        return ttl_ns + 2 * IV_NS

    def lost_conn_takeover_bound_ns(self, ttl_ns):
        # The key outlives the connection: as for a kill.
        return ttl_ns + 2 * IV_NS


# --- The scenarios ---------------------------------------------------------

class Test:
    def __init__(self, backend, replica, tmp):
        self.backend, self.replica, self.tmp = backend, replica, tmp
        self.prefix = f"{backend.name}-{os.getpid()}-{int(time.time())}-"
        self.scenario_replicas = []
        self.lease_names = {}  # namespace -> the names of its services
        self.fig = None  # the figures of the scenario that runs

    def ns(self, what, names=(NAME,)):
        self.lease_names[self.prefix + what] = list(names)
        return self.prefix + what

    def start(self, rid, ns, address=None, **kw):
        return Replica(self, rid, address or self.backend.lease_address_for(rid),
                       ns, **kw)

    def runs_after(self, ns, t_ns, replica=None, exclude=None):
        return [r for r in self.backend.runs(ns) if r.start > t_ns and
                (replica is None or r.replica == replica) and r.replica != exclude]

    def wait_runs(self, ns, count, seconds=5.0, after_ns=0, replica=None,
                  exclude=None, what=None):
        """Waits for `count` runs that began after after_ns (of replica, or
        of any replica but exclude); returns them."""
        def enough():
            got = self.runs_after(ns, after_ns, replica, exclude)
            return got if len(got) >= count else None
        who = (f" of replica {replica}" if replica is not None else
               f" of a replica other than {exclude}" if exclude is not None else "")
        return wait_until(enough, seconds,
                          what or f"{count} runs{who} recorded in {ns}")

    def wait_intervals(self, ns, n=2):
        """Waits until the replicas of ns have passed n more due points (n
        more runs recorded): every one that started has asked for the
        lease by then."""
        self.wait_runs(ns, n, after_ns=now_ns())

    def holder(self, ns, replicas):
        """The replica that made the latest run."""
        latest = max(self.backend.runs(ns), key=lambda r: r.start)
        return next(r for r in replicas if r.rid == latest.replica)

    def report(self, runs, handovers_ns=(), extra=None, span_runs=None):
        """The scenario's figures (kept for --figures) and their note."""
        self.fig = extra if extra is not None else figures(runs, handovers_ns,
                                                           span_runs)
        return figures_note(self.fig)


def reconnected(r):
    """The lease store's INFO lines of a reconnection."""
    return [l for l in r.store_lines("INFO") if r.test.backend.RECONNECTED in l]


def s1_three_replicas(t):
    """Three replicas for 3 s: one runs each point, none overlap, and
    nearly every point of the window runs. At 2 s the holder stops, and
    releases the lease to a new holding with a higher token."""
    ns = t.ns("three")
    reps = [t.start(i, ns) for i in (1, 2, 3)]
    t.wait_runs(ns, int(2.0 / INTERVAL), seconds=10.0)
    sleep_to_phase(0.5)
    holder = t.holder(ns, reps)
    t_stop = now_ns()
    holder.stop()
    t.wait_runs(ns, int(1.0 / INTERVAL), seconds=10.0, after_ns=t_stop)
    for r in reps:
        r.terminate()
    for r in reps:
        r.wait_stopped()
    runs = t.backend.runs(ns)
    check_safe(runs, t.scenario_replicas, t.backend, ns)
    loops = sum(r.stats()["loops"] for r in reps)
    check(loops == len(runs), f"the replicas made {loops} runs but recorded {len(runs)}")
    points = {r.point for r in runs}
    span = max(points) - min(points) + 1
    check(len(points) >= 0.8 * span,
          f"only {len(points)} of the {span} points from the first run to the "
          "last ran")
    after = first_after(runs, t_stop, exclude=holder.rid)
    late = after.due - t_stop
    bound = 2 * IV_NS + 50 * MS  # the stop's release, then the skip rule
    check(late <= bound, f"replica {after.replica} ran {late / 1e6:.0f} ms after "
          f"replica {holder.rid} stopped; the bound is {bound / 1e6:.0f} ms")
    return (f"{len(runs)} runs by replicas {sorted({r.replica for r in runs})}; "
            f"replica {holder.rid} stopped, replica {after.replica} ran "
            f"{late / 1e6:.0f} ms later; {token_note(runs)}; "
            + t.report(runs, [late]))


def s2_kill_holder(t):
    """kill -9 of the holder: another replica takes over in time
    (PostgreSQL: the server sees the session end; Redis: the key lapses a
    TTL after its last renewal, with a timeout of 0.1 s here)."""
    b = t.backend
    ns = t.ns("kill")
    reps = [t.start(i, ns, timeout=b.KILL_TIMEOUT) for i in (1, 2, 3)]
    ttl, _ = reps[0].lease_ttl()
    bound = b.kill_takeover_bound_ns(ttl)
    t.wait_runs(ns, 10)
    holder = t.holder(ns, reps)
    # Between two due points, so that the kill does not race the holder's
    # own run of the next one.
    sleep_to_phase(0.5)
    t_kill = now_ns()
    holder.kill9()
    t.wait_runs(ns, 5, seconds=bound / 1e9 + 3.0, after_ns=t_kill,
                exclude=holder.rid)
    others = [r for r in reps if r is not holder]
    for r in others:
        r.terminate()
    for r in others:
        r.wait_stopped()
    runs = b.runs(ns)
    check_safe(runs, t.scenario_replicas, b, ns)
    after = first_after(runs, t_kill, exclude=holder.rid)
    check(after is not None, f"no replica took over from replica {holder.rid}")
    late = after.due - t_kill
    check(0 < late <= bound + SLACK_NS,
          f"replica {after.replica} took over {late / 1e6:.0f} ms after the kill "
          f"of replica {holder.rid}; the bound is {bound / 1e6:.0f} ms: {after}")
    if b.name == "redis":
        # Not before the key could lapse: a TTL after its last renewal,
        # which is at most a third of the TTL old.
        low = ttl - ttl // 3 - SLACK_NS
        check(late >= low, f"replica {after.replica} took over {late / 1e6:.0f} "
              f"ms after the kill, before the key of the dead holder could "
              f"lapse ({low / 1e6:.0f} ms)")
    stray = [r for r in runs if r.replica == holder.rid and r.start > t_kill]
    check(not stray, f"the killed replica ran after its death: {stray}")
    return (f"replica {after.replica} took over from replica {holder.rid} "
            f"{late / 1e6:.0f} ms after the kill (bound {bound / 1e6:.0f}, TTL "
            f"{ttl / 1e6:.0f} ms); {token_note(runs)}; " + t.report(runs, [late]))


def s3_kill_connection(t):
    """The server ends the holder's lease connection (PostgreSQL:
    pg_terminate_backend of the pid in its loopsvc_lease row; Redis:
    CLIENT KILL of the connection named after the holder its key names):
    the holder drops its leases at once, reconnects after 100 ms, and
    nothing overlaps. PostgreSQL frees the rows of the ended session at
    once: another replica takes over with a higher token. Redis keeps the
    key until its TTL (3 s here): no other replica can take it, and the
    holder takes its own key back with the SAME token."""
    b = t.backend
    ns = t.ns("conn")
    reps = [t.start(i, ns, timeout=1.0) for i in (1, 2, 3)]
    ttl, _ = reps[0].lease_ttl()
    t.wait_runs(ns, 10)
    holder = t.holder(ns, reps)
    sleep_to_phase(0.5)
    t_kill0 = now_ns()
    killed_token = b.kill_lease_connection(ns, holder)
    t_kill = now_ns()
    # Its reconnection waits 100 ms, then it asks again.
    wait_until(lambda: reconnected(holder), 3.0, f"replica {holder.rid} to reconnect")
    t.wait_runs(ns, 5, after_ns=now_ns())
    check(holder.alive(), f"replica {holder.rid} died when its connection was killed")
    for r in reps:
        r.terminate()
    for r in reps:
        r.wait_stopped()
    runs = b.runs(ns)
    check_safe(runs, t.scenario_replicas, b, ns)
    # A run that began after the kill needed the store thread to have seen
    # the connection end (at once), and the backoff keeps it from asking
    # again for 100 ms.
    stray = [r for r in runs if r.replica == holder.rid
             and t_kill + 5 * MS < r.start < t_kill + 100 * MS]
    check(not stray, f"replica {holder.rid} ran after its lease connection "
          f"was killed: {stray}")
    nxt = first_after(runs, t_kill)
    check(nxt is not None, "nothing ran after the kill")
    late = nxt.due - t_kill
    before = [r for r in runs if r.replica == holder.rid and r.start < t_kill0]
    last_token = max(r.token for r in before)
    check(killed_token == last_token, f"the store had token {killed_token} "
          f"for the lease, but replica {holder.rid}'s last run had {last_token}")
    if nxt.replica == holder.rid:
        # Its own lease back: at its first due point after the backoff.
        bound = 100 * MS + 2 * IV_NS
        check(nxt.token == last_token, f"replica {holder.rid} took its lease "
              f"back with token {nxt.token}, not its {last_token}: no other "
              f"replica held it meanwhile: {nxt}")
        how = (f"took its own lease back with the SAME token {nxt.token} "
               f"(the store still named it: no other replica could take it)")
    else:
        bound = b.lost_conn_takeover_bound_ns(ttl) + IV_NS
        check(nxt.token > last_token, f"the first run after the kill has token "
              f"{nxt.token}, not above the {last_token} of the holding whose "
              f"connection was ended: {nxt}")
        how = f"took over, token {last_token} -> {nxt.token}"
    if b.name == "redis":
        # The key has not lapsed (TTL 3 s): no one else can have it.
        check(nxt.replica == holder.rid, f"replica {nxt.replica} ran first after "
              f"the connection of replica {holder.rid} was killed, though its "
              f"key had not lapsed: {nxt}")
    check(late <= bound + SLACK_NS,
          f"the first run after the kill came {late / 1e6:.0f} ms later; the "
          f"bound is {bound / 1e6:.0f} ms: {nxt}")
    warnings = holder.warnings()
    check(len(warnings) == 1, f"replica {holder.rid} logged {len(warnings)} "
          f"WARNINGs, not 1, for one lost connection: {warnings}")
    return (f"replica {holder.rid} lost its connection (kill took "
            f"{(t_kill - t_kill0) / 1e6:.0f} ms); replica {nxt.replica} {how} "
            f"{late / 1e6:.0f} ms later; {token_note(runs)}; "
            + t.report(runs, [late]))


def s4_outage(t):
    """The server is away at start, comes, goes away mid-run (every
    connection cut, the port closed) and comes back: the replicas stay up,
    log each outage once or twice (not once per attempt), nothing runs
    while it is away, and the lease is held again."""
    b = t.backend
    ns = t.ns("outage")
    proxy = Proxy(b.upstream)
    via = b.address_via(proxy.port)
    reps = [t.start(i, ns, address=via, timeout=0.5) for i in (1, 2)]
    try:
        # Attempts at 0, 0.1, 0.3, 0.7 and 1.5 s: four fail in 1.2 s.
        time.sleep(1.2)
        for r in reps:
            check(r.alive(), f"replica {r.rid} died while the server was away")
            w = r.warnings()
            check(len(w) == 1, f"replica {r.rid} logged {len(w)} WARNINGs, not "
                  f"1, in 1.2 s with the server away from the start: {w}")
        check(not b.runs(ns), "something ran with the server away")
        t_up = now_ns()
        proxy.up()
        t.wait_runs(ns, 5, seconds=4.0)
        resumed = (b.runs(ns)[0].start - t_up) / 1e9
        before = {r.rid: len(r.warnings()) for r in reps}
        t.wait_runs(ns, 5, after_ns=now_ns())
        holder = t.holder(ns, reps)
        sleep_to_phase(0.5)
        t_down = now_ns()
        proxy.down()
        time.sleep(1.0)  # the outage
        t_up2 = now_ns()
        proxy.up()
        t.wait_runs(ns, 5, seconds=4.0, after_ns=t_up2)
        for r in reps:
            check(r.alive(), f"replica {r.rid} died when the server went away")
            w = r.warnings()[before[r.rid]:]
            # One for the lost session, one more if the reconnects fail
            # for another reason.
            check(1 <= len(w) <= 2, f"replica {r.rid} logged {len(w)} WARNINGs "
                  f"for one outage of 1 s: {w}")
        wait_until(lambda: all(reconnected(r) for r in reps), 2.0,
                   "both replicas to log their reconnection")
        for r in reps:
            r.terminate()
        for r in reps:
            r.wait_stopped()
    finally:
        proxy.down()
    runs = b.runs(ns)
    check_safe(runs, t.scenario_replicas, b, ns)
    during = [r for r in runs if t_down + 5 * MS < r.start < t_up2]
    check(not during, f"runs while the server was away: {during}")
    after = first_after(runs, t_up2)
    check(after is not None, "no run after the server came back")
    loops = sum(r.stats()["loops"] for r in reps)
    check(loops == len(runs), f"the replicas made {loops} runs but recorded {len(runs)}")
    back = after.due - t_up2
    who = "the same replica" if after.replica == holder.rid else f"replica {after.replica}"
    return (f"first runs {resumed:.2f} s after the server came; cut for 1 s "
            f"while replica {holder.rid} held: {who} ran {back / 1e6:.0f} ms "
            f"after it came back; {token_note(runs)}; "
            + t.report(runs, [back]))


def s5_bad_configuration(t):
    """Addresses that do not parse fail at create; a refused connection, a
    login the server turns away, and a server that never answers are each
    a WARNING, and the replica still stops at once on SIGTERM."""
    ns = t.ns("bad")
    for address in t.backend.bad_addresses():
        r = t.start(0, ns, address=address, record=False)
        try:
            r.proc.wait(STOP_BOUND)
        except subprocess.TimeoutExpired:
            r.kill9()
            raise Failure(f"a replica with address {address!r} did not exit")
        check(r.proc.returncode == 3 and "lease-create: EINVAL" in r.stdout(),
              f"address {address!r}: exit {r.proc.returncode}, "
              f"stdout {r.stdout()!r}; expected EINVAL from the create")

    refused_port = free_port()
    cases = [("refused", t.backend.refused_address(refused_port), "refused")]
    cases += [("rejected", a, why) for a, why in t.backend.rejected_logins()]
    hung = Proxy(t.backend.upstream)
    hung.up(frozen=True)
    cases.append(("hung", t.backend.address_via(hung.port), None))
    try:
        reps = [(what, t.start(i + 1, ns + f"-{i}", address=a, timeout=0.3), why)
                for i, (what, a, why) in enumerate(cases)]
        wait_until(lambda: all(r.warnings() for _, r, _ in reps), 3.0,
                   "a WARNING from every replica")
        time.sleep(0.5)  # more attempts, which must say nothing new
        for what, r, why in reps:
            check(r.alive(), f"the {what} replica died")
            w = r.warnings()
            check(len(w) == 1, f"the {what} replica logged {len(w)} WARNINGs, "
                  f"not 1: {w}")
            check(why is None or why in w[0],
                  f"the {what} replica's WARNING does not say {why!r}: {w[0]}")
        stops = {}
        for what, r, why in reps:
            r.terminate()
        for what, r, why in reps:
            stops[what] = r.wait_stopped(2.0)
    finally:
        hung.down()
    return ", ".join(f"{k} stopped in {v:.2f} s" for k, v in stops.items())


def s6_server_hangs(t):
    """The server hangs while a replica holds the lease: it stops running
    when its renewal in the background times out, and a stop, then or at
    once, is still bounded by the lease's timeout."""
    b = t.backend
    ns, ns_now = t.ns("hang"), t.ns("hang-stop")
    proxy, proxy_now = Proxy(b.upstream), Proxy(b.upstream)
    proxy.up()
    proxy_now.up()
    r = t.start(1, ns, address=b.address_via(proxy.port), timeout=0.3)
    r_now = t.start(2, ns_now, address=b.address_via(proxy_now.port),
                    timeout=0.3)
    try:
        t.wait_runs(ns, 5)
        t.wait_runs(ns_now, 5)
        # Right after a run, so that the stop finds it holding the lease
        # and its release meets the hung server.
        t.wait_runs(ns_now, 1, seconds=2.0, after_ns=now_ns())
        proxy_now.freeze()
        took_now = r_now.stop(2.0)
        sleep_to_phase(0.5)
        t_freeze = now_ns()
        proxy.freeze()
        ttl, model = r.lease_ttl()
        bound = hang_stop_bound_ns(ttl, model, 0.3)
        wait_until(r.warnings, (bound + ttl) / 1e9 + 1.0,
                   "a WARNING when the server hung")
        # Watch on until no holding could still be counted on here: the
        # store's time to live, two intervals more, and 0.8 s at least.
        watch = max(0.8, (ttl + 2 * IV_NS) / 1e9)
        time.sleep(max(0.0, t_freeze / 1e9 + watch - now_ns() / 1e9))
        check(r.alive(), "the replica died when the server hung")
        took = r.stop(2.0)
    finally:
        proxy.down()
        proxy_now.down()
    runs = b.runs(ns)
    check_safe(runs, t.scenario_replicas, b, ns)
    stray = [x for x in runs if x.start > t_freeze + bound]
    check(not stray, f"runs more than {bound / 1e6:.0f} ms after the server "
          f"hung: {stray}")
    after = [x for x in runs if x.start > t_freeze]
    last = max((x.start - t_freeze for x in after), default=0)
    said = r_now.warnings()
    runs_now = b.runs(ns_now)
    check_safe(runs_now, (), b, ns_now)
    fig = add_figures(figures(runs), figures(runs_now))
    return (f"last run {last / 1e6:.0f} ms after the server hung ({len(after)} "
            f"runs; bound {bound / 1e6:.0f} ms); stopped {took:.2f} s after "
            f"SIGTERM with the server hung, {took_now:.2f} s when it hung as "
            f"the stop began"
            + (f" ({said[0].split(' - ', 1)[1][:70]}...)" if said else "")
            + "; " + t.report(runs, extra=fig))


# How long the slow run of s7_paused_holder takes: longer than the pause.
SLOW_WORK = 2.0
# What replica --slow-file says on stderr.
SLOW_BEGAN = re.compile(r"^replica (\d+): slow run of point (\d+) began with "
                        r"token (\d+)$", re.M)
SLOW_VALID = re.compile(r"^replica (\d+): slow run of point (\d+): (?:lease "
                        r"valid for ([0-9.]+) s|valid_for: (.*))$", re.M)


def s7_paused_holder(t):
    """SIGSTOP of the holder in the middle of a long run, for longer than
    its lease lasts (PostgreSQL: its row expires; Redis: its key lapses):
    another replica takes over with a higher token within the TTL and a
    few intervals. Then SIGCONT: the run goes on, its lease has lapsed
    here (lsvc_lease_valid_for says 0), its late write is refused by the
    fenced sink ("stale"), and it starts no run of the holding it lost.
    Runs overlap here, which is what the fence is for: they are counted,
    and fail nothing; an accepted stale write, or a point written twice,
    fails."""
    ns = t.ns("pause")
    b = t.backend
    # A TTL of 3 timeouts, 0.6 s.
    timeout = 0.2
    slow_file = os.path.join(t.tmp, f"{ns}.slow")
    apps = {rid: f"lsvc-pause-{os.getpid()}-{rid}" for rid in (1, 2, 3)}
    reps = [t.start(rid, ns, address=b.lease_address_for(rid, apps[rid]),
                    timeout=timeout, slow_file=slow_file, slow_work=SLOW_WORK)
            for rid in (1, 2, 3)]
    ttl, model = reps[0].lease_ttl()
    # Longer than the pause will be, so that the run is still in progress
    # when it goes on.
    check(SLOW_WORK > (pause_takeover_bound_ns(ttl) + 2 * ttl) / 1e9,
          f"a TTL of {ttl / 1e9} s is too long for a slow run of {SLOW_WORK} s")
    slow_work = SLOW_WORK
    t.wait_runs(ns, 10)
    # The one run that removes the file is slow: the holder's next.
    with open(slow_file, "w"):
        pass

    def slow_began():
        for r in reps:
            m = SLOW_BEGAN.search(r.stderr())
            if m:
                return r, int(m.group(2)), int(m.group(3))
        return None
    paused, point, token = wait_until(slow_began, 2.0, "a run to take the slow file")
    t_stop = now_ns()
    paused.pause()
    check(t_stop < point_ns(point, paused.offset_ns) + slow_work * 1e9,
          f"replica {paused.rid} was stopped after its slow run of point "
          f"{point} would have ended")
    bound = pause_takeover_bound_ns(ttl)

    def taken_over():
        higher = [r for r in b.runs(ns) if r.replica != paused.rid and r.token > token]
        # Stopped for longer than the lease lasts, whatever else happens.
        return higher and now_ns() >= t_stop + ttl
    wait_until(taken_over, (ttl + bound) / 1e9 + 2.0,
               f"another replica to take over from the stopped replica {paused.rid}")
    # The stopped holder's connection is still there; the lease is not its.
    holder = b.lease_holder(ns)
    check(holder is not None, "the lease has no live holder in the store while "
          "another replica runs")
    check(holder.split(":")[1:2] != [str(paused.proc.pid)],
          f"the stopped replica {paused.rid} still holds the lease: {holder!r}")
    lease_conns = b.connections([paused], apps)[paused.rid][0]
    check(lease_conns == 1, f"the stopped replica {paused.rid} has {lease_conns} "
          "lease connections open, not 1 (it should stay, idle)")
    t_cont = now_ns()
    paused.resume()

    def slow_recorded():
        return next((r for r in b.runs(ns)
                     if r.replica == paused.rid and r.point == point), None)
    slow = wait_until(slow_recorded, slow_work + 3.0,
                      f"the slow run of replica {paused.rid} to be recorded")
    # A few more runs after it: the resumed replica must not run in them.
    t.wait_runs(ns, 5, after_ns=slow.end)
    for r in reps:
        r.terminate()
    for r in reps:
        r.wait_stopped()

    runs = b.runs(ns)
    # The slow run's record among these (the records are read anew).
    slow = next(r for r in runs if r.replica == slow.replica and r.start == slow.start)
    check_replica_logs(reps)
    check(slow.token == token, f"the slow run said token {token} but recorded "
          f"{slow.token}")
    check(slow.sink == "stale", f"the late write of the stopped replica "
          f"{paused.rid} was not refused by the sink: {slow}")
    valid = SLOW_VALID.search(paused.stderr())
    check(valid, f"replica {paused.rid} did not say what lsvc_lease_valid_for "
          "said before its late write")
    check(valid.group(3) is not None and float(valid.group(3)) == 0,
          f"lsvc_lease_valid_for said {valid.group(0)!r} before the late "
          "write: its lease had lapsed here")
    check_fence(runs)
    check_points_once(runs)
    takeover = min((r for r in runs if r.replica != paused.rid and r.token > token),
                   key=lambda r: r.start)
    handover = takeover.due - t_stop
    check(handover <= bound + SLACK_NS,
          f"replica {takeover.replica} took over {handover / 1e6:.0f} ms after "
          f"replica {paused.rid} was stopped; the bound is {bound / 1e6:.0f} ms: "
          f"{takeover}")
    if model == "store":
        # Its renewals went on in the background during the slow run: the
        # lease went only once its holder was stopped.
        check(handover > 0, f"replica {takeover.replica} took over before "
              f"replica {paused.rid} was stopped: {takeover}")
    stray = [r for r in runs if r.replica == paused.rid and r is not slow and
             r.start > t_stop and r.token <= token]
    check(not stray, f"the stopped replica {paused.rid} ran again in the "
          f"holding it had lost: {stray[:3]}")
    rest = [r for r in runs if r is not slow]
    check_tokens(rest, b.RETAKE_KEEPS_TOKEN)
    check_sink(b, ns, runs)
    pairs = overlapping_pairs(runs)
    check(pairs, "no run overlapped the stopped one: the fence was not tried")
    others = [p for p in pairs if not any(r is slow for r in p)]
    check(not others, f"runs overlapped besides the stopped one: {others[:2]}")
    return (f"replica {paused.rid} stopped "
            f"{(t_stop - point_ns(point, paused.offset_ns)) / 1e6:.0f} ms into "
            f"its run of point {point} for {(t_cont - t_stop) / 1e6:.0f} ms; "
            f"handover {handover / 1e6:.0f} ms (bound {bound / 1e6:.0f}) to "
            f"replica {takeover.replica}, token {token} -> {takeover.token}; "
            f"its late write refused; {token_note(runs)}; "
            + t.report(runs, [handover]))


def s8_many_services(t):
    """Three replica processes each run SERVICES services on one lease
    object: every point of each service runs once, runs of one service
    never overlap, each replica holds one connection for all its leases
    (two with its recorder's) and every held lease names it; when the
    replica holding the most leases stops, the others take its services
    over."""
    b = t.backend
    n = 50
    names = [f"{NAME}-{i}" for i in range(n)]
    ns = t.ns("many", names=names)
    apps = {rid: f"lsvc-many-{os.getpid()}-{rid}" for rid in (1, 2, 3)}
    reps = [t.start(rid, ns, address=b.lease_address_for(rid, apps[rid]),
                    services=n) for rid in (1, 2, 3)]

    def every_service_ran(count, after_ns=0):
        runs = b.runs_under(ns)
        return len([v for v in runs.values()
                    if len([r for r in v if r.start > after_ns]) >= count]) == n
    wait_until(lambda: every_service_ran(3), 10.0, f"{n} services to run")
    t_ready = now_ns()

    # A few samples: at most one lease connection per replica in each
    # (none for a moment while it connects again), one in some, and at
    # most two with the recording one.
    most = {r.rid: 0 for r in reps}
    seen = {r.rid: 0 for r in reps}
    for i in range(4):
        conns = b.connections(reps, apps)
        for r in reps:
            lease_c, record_c = conns[r.rid]
            check(lease_c <= 1, f"replica {r.rid} has {lease_c} lease "
                  f"connections, not 1, for its {n} services")
            check(lease_c + record_c <= 2, f"replica {r.rid} has "
                  f"{lease_c + record_c} connections")
            most[r.rid] = max(most[r.rid], lease_c + record_c)
            seen[r.rid] += lease_c
        held = b.held_by(ns, names, reps, apps)
        if i < 3:
            t.wait_runs(f"{ns}/0", 5, after_ns=now_ns())  # the next sample
    check(all(seen.values()), f"a replica had no lease connection in any "
          f"sample: {seen}")
    counts = {rid: len(v) for rid, v in held.items()}
    check(sum(counts.values()) == n, f"only {sum(counts.values())} of the {n} "
          f"leases are held: {counts}")
    victim = next(r for r in reps if counts[r.rid] == max(counts.values()))
    victim_names = {name for name, _ in held[victim.rid]}
    t_term = now_ns()
    victim.stop()
    t_stopped = now_ns()
    rest = [r for r in reps if r is not victim]

    def moved():
        runs = b.runs_under(ns)
        return all(any(r.start > t_stopped for r in runs.get(f"{ns}/{names.index(x)}", []))
                   for x in victim_names)
    wait_until(moved, 5.0, f"the {len(victim_names)} services of replica "
               f"{victim.rid} to run elsewhere")
    wait_until(lambda: every_service_ran(3, after_ns=t_stopped), 5.0,
               f"{n} services to run after replica {victim.rid} stopped")
    after = {rid: len(v) for rid, v in b.held_by(ns, names, reps, apps).items()
             if rid != victim.rid}
    for r in rest:
        r.terminate()
    for r in rest:
        r.wait_stopped()

    check_replica_logs(reps)
    # No WARNING of the leases (the store's, or a service's that could not
    # ask its lease: two services of one name, say) but one: a round that
    # PostgreSQL broke off as a deadlock with another replica's round (a
    # known fault of an earlier lease statement) ends the session, and the
    # replica must have connected again. Other WARNINGs (overruns: the
    # runs of a replica share its one recording connection) are counted
    # for the report.
    deadlocks, other = 0, []
    for r in reps:
        w = [l for l in r.stderr().splitlines() if "| WARNING |" in l]
        lease = [l for l in w if l in r.warnings() or re.search(
            r"\| loopsvc\.\S+ - Could not .*the lease", l)]
        dl = [l for l in lease if "for the leases: deadlock detected" in l]
        check(len(lease) == len(dl), f"replica {r.rid} logged "
              f"{len(lease) - len(dl)} WARNINGs of its leases: "
              f"{[l for l in lease if l not in dl][:2]}")
        check(not dl or reconnected(r),
              f"replica {r.rid} did not connect again after a deadlock: {dl[:1]}")
        deadlocks += len(dl)
        other += [l.split(" - ", 1)[1] for l in w if l not in lease]
    all_runs = b.runs_under(ns)
    sinks = b.sinks_under(ns)
    total, late_max, first_late = 0, 0, 0
    fig = None
    for i, name in enumerate(names):
        sns = f"{ns}/{i}"
        runs = all_runs.get(sns, [])
        check(runs, f"service {name} never ran")
        total += len(runs)
        try:
            check_no_overlap(runs)
            check_points_once(runs)
            check_fence(runs)
            check_tokens(runs, b.RETAKE_KEEPS_TOKEN)
            check_sink(b, sns, runs, sinks.get(sns))
        except Failure as e:
            raise Failure(f"service {name}: {e}")
        first = min(runs, key=lambda r: r.start)
        first_late = max(first_late, first.start - first.due)
        # Once every service ran (the first takes of the new rows may wait
        # for one another), nearly every point runs.
        steady = [r for r in runs if r.start > t_ready]
        points = {r.point for r in steady}
        check(points, f"service {name} did not run after {n} services ran")
        span = max(points) - min(points) + 1
        check(len(points) >= 0.8 * span, f"service {name}: only {len(points)} "
              f"of the {span} points from its first run after all ran to its "
              f"last ran; gaps: {gaps(steady, t0_ns=t_stopped)} (ms after "
              f"replica {victim.rid} stopped)")
        f = figures(runs, span_runs=steady)
        fig = f if fig is None else add_figures(fig, f)
        if name in victim_names:
            nxt = first_after(runs, t_term, exclude=victim.rid)
            late_max = max(late_max, nxt.due - t_term)
    bound = 4 * IV_NS
    check(late_max <= bound + SLACK_NS, f"a service of replica {victim.rid} ran "
          f"elsewhere only {late_max / 1e6:.0f} ms after its SIGTERM; the "
          f"bound is {bound / 1e6:.0f} ms")
    loops = sum(r.stats()["loops"] for r in reps)
    check(loops == total, f"the replicas made {loops} runs but recorded {total}")
    fig["handover_ms"] = [round(late_max / 1e6)]
    # How far the library's due times strayed from its wall-clock grid
    # (align_to_clock): far less than a quarter interval, or the check
    # above would have failed.
    grid_off = max(r.stats().get("grid_off_us", 0) for r in reps)
    return (f"{n} services x 3 replicas: {total} runs; leases held {counts}, "
            f"after replica {victim.rid} stopped {after} (its services ran "
            f"elsewhere within {late_max / 1e6:.0f} ms of its SIGTERM); "
            f"connections per replica "
            f"at most {most} (1 for the leases + 1 recording); first runs up "
            f"to {first_late / 1e6:.0f} ms late; due times up to "
            f"{grid_off / 1e3:.2f} ms off the wall-clock grid"
            + (f"; the server broke off {deadlocks} rounds as deadlocks" if deadlocks else "")
            + (f"; {len(other)} other WARNINGs, e.g. {other[0][:90]!r}" if other else "")
            + "; summed over the services (points skipped counted after all "
            "ran): " + t.report(None, extra=fig))


def s9_clock_skew(t):
    """Replicas whose clocks disagree by 0.4 of an interval (--offset, the
    library's align_to_clock grid shifted): no logical point runs twice
    across handovers either way, two by kill -9 and one by a stop. Points
    are named on each replica's own grid less its offset. The handovers
    are steered so that each crosses between the skewed replica and an
    unskewed one: at most two replicas live at a time (replica 1 and 3
    unskewed, replica 2 skewed, started again as replica 4): 1 -> 2 by
    kill, 2 -> 3 by kill, 3 -> 4 by a stop that comes after replica 3's
    run of a point began and before replica 4 is due at the same logical
    point, which the new holding must leave (its previous holding ended,
    at that run's start, less than half an interval before)."""
    b = t.backend
    ns = t.ns("skew")
    skew = 0.4 * INTERVAL
    skew_ns = int(round(skew * 1e9))

    def start(rid, offset):
        r = t.start(rid, ns, offset=offset, timeout=b.KILL_TIMEOUT)
        r.wait_started()
        return r
    r1 = start(1, 0.0)
    ttl, _ = r1.lease_ttl()
    kill_bound = b.kill_takeover_bound_ns(ttl)
    t.wait_runs(ns, 3, replica=1)
    steps = []  # (how, from, to, t_event, bound)

    def hand(victim, taker, how, phase, bound):
        # Taker has passed a due point or two since it started: it asks.
        t.wait_intervals(ns, 2)
        sleep_to_phase(phase)
        t_event = now_ns()
        if how == "kill":
            victim.kill9()
        else:
            victim.stop()
        t.wait_runs(ns, 3, seconds=bound / 1e9 + 3.0, after_ns=t_event,
                    replica=taker.rid)
        steps.append((how, victim, taker, t_event, bound))

    # Kills half way between the skewed point (0.4) and the next unskewed
    # one (1.0) of an interval.
    r2 = start(2, skew)
    hand(r1, r2, "kill", 0.7, kill_bound + skew_ns)
    r3 = start(3, 0.0)
    hand(r2, r3, "kill", 0.7, kill_bound)
    r4 = start(4, skew)
    # 0.25: replica 3's run of the point (10 ms) is over, replica 4's turn
    # at the same logical point (0.4) is to come.
    hand(r3, r4, "stop", 0.25, 2 * IV_NS + skew_ns)
    r4.stop()

    runs = b.runs(ns)
    for p in run_twice(runs):
        first, second = sorted((r for r in runs if r.point == p),
                               key=lambda r: r.start)[:2]
        why = ""
        if second.due - first.start < IV_NS // 2:
            # The case the new holding's skip rule is for.
            why = (f" Replica {second.replica} was due "
                   f"{(second.due - first.start) / 1e6:.1f} ms after replica "
                   f"{first.replica} began the point, less than half an "
                   f"interval, but began {(second.start - second.due) / 1e6:.1f} "
                   "ms after its due time: its take reached the store more "
                   "than half an interval after the previous holding ended, "
                   "and the skip rule of leasestore.c measures to the take, "
                   "not to the due time (a library fault)")
        raise Failure(f"point {p} ran twice: {first} and {second}.{why}")
    check_safe(runs, t.scenario_replicas, b, ns)
    notes, handovers = [], []
    for how, victim, taker, t_event, bound in steps:
        first = first_after(runs, t_event, exclude=victim.rid)
        check(first is not None and first.replica == taker.rid,
              f"replica {taker.rid} did not take over from replica "
              f"{victim.rid}: {first}")
        late = first.due - t_event
        check(0 < late <= bound + SLACK_NS, f"replica {taker.rid} took over "
              f"{late / 1e6:.0f} ms after the {how} of replica {victim.rid}; "
              f"the bound is {bound / 1e6:.0f} ms: {first}")
        last = max((r for r in runs if r.replica == victim.rid and r.start < t_event),
                   key=lambda r: r.start)
        left = first.point - last.point - 1
        check(left >= 0, f"replica {taker.rid} ran point {first.point} after "
              f"replica {victim.rid} ran {last.point}")
        handovers.append(late)
        sk = lambda r: "skewed" if r.offset_ns else "unskewed"
        notes.append(f"{how} {victim.rid}({sk(victim)}) -> {taker.rid}"
                     f"({sk(taker)}) {late / 1e6:.0f} ms, points {last.point}"
                     f" -> {first.point} ({left} left)")
    # The stop: the skewed replica was due at the logical point the
    # stopped one had begun 0.4 of an interval before; once the release
    # was done by then, it took the lease there and left that point (which
    # check_points_once has seen it did).
    how, victim, taker, t_event, _ = steps[-1]
    last = max((r for r in runs if r.replica == victim.rid and r.start < t_event),
               key=lambda r: r.start)
    rel = [l for l in victim.lines("INFO") if "Released the lease" in l]
    check(rel, f"replica {victim.rid} did not log the release of its lease")
    due = point_ns(last.point, taker.offset_ns)
    ahead = due - log_time_ns(rel[0])
    notes.append(f"the release came {ahead / 1e6:.0f} ms before replica "
                 f"{taker.rid}'s turn at point {last.point}"
                 + (", which it left" if ahead > 0 else
                    " (it found the lease held there)"))
    return "; ".join(notes) + f"; {token_note(runs)}; " + t.report(runs, handovers)


def s10_orphaned(t):
    """The holder's runs fail (--fail-file): the replicas that do not hold
    the lease log the WARNING "No replica has run <name> successfully" a
    limit (5 intervals, at least 1 s) after the last success on any
    replica, and not before, and the holder does not (it is judged by its
    own runs); the store keeps that last success (PostgreSQL:
    loopsvc_lease.last_success; Redis: field "success" of
    loopsvc:state:<ns>:<name>). Once the failing holder stops (SIGTERM),
    another takes over and succeeds, and each of the others logs the INFO
    "<name> runs again", and the store's record is fresh."""
    b = t.backend
    ns = t.ns("orphan")
    fail_file = os.path.join(t.tmp, f"{ns}.fail")
    limit = max(ORPHANED_AFTER * IV_NS, ORPHANED_MIN_NS)
    r1 = t.start(1, ns, fail_file=fail_file, timeout=b.SHORT_TIMEOUT)
    t.wait_runs(ns, 3, replica=1)
    others = [t.start(i, ns, timeout=b.SHORT_TIMEOUT) for i in (2, 3)]
    for r in others:
        r.wait_started()
    t.wait_intervals(ns, 3)
    with open(fail_file, "w"):
        pass
    t_fail = now_ns()

    def orphan_warnings(r):
        return [l for l in r.lines("WARNING") if f"No replica has run {NAME} "
                "successfully" in l]
    wait_until(lambda: all(orphan_warnings(r) for r in others),
               (limit + 2 * IV_NS) / 1e9 + 3.0,
               "the WARNING of an orphaned service from replicas 2 and 3")
    age_warned = b.success_age_ms(ns)
    runs = b.runs(ns)
    ok1 = [r for r in runs if r.replica == 1 and r.sink == "ok"]
    check(ok1, "replica 1 made no successful run before its runs failed")
    last_ok = max(ok1, key=lambda r: r.end)
    check(not [r for r in runs if r.replica == 1 and r.sink == "failed" and
               r.start < last_ok.start], "replica 1 failed before it succeeded")
    delays, said = [], []
    for r in others:
        w = orphan_warnings(r)
        check(len(w) == 1, f"replica {r.rid} logged the orphan WARNING "
              f"{len(w)} times: {w}")
        delay = log_time_ns(w[0]) - last_ok.end
        # The success was told the store a little after the run ended (its
        # record); a WARNING comes at the first due point past the limit.
        check(limit - 5 * MS <= delay <= limit + IV_NS + 100 * MS,
              f"replica {r.rid} logged the orphan WARNING {delay / 1e6:.0f} ms "
              f"after the last success (replica 1's run ending at "
              f"{last_ok.end / 1e9:.3f} s); the limit is {limit / 1e6:.0f} ms: "
              f"{w[0]}")
        m = re.search(r"successfully for ([0-9.]+) s", w[0])
        check(m and limit / 1e9 <= float(m.group(1)) <= (limit + IV_NS + 100 * MS) / 1e9,
              f"replica {r.rid}'s WARNING says the wrong time: {w[0]}")
        delays.append(delay)
        said.append(m.group(1))
    check(not orphan_warnings(r1), f"the holder, whose runs fail, logged the "
          f"orphan WARNING: {orphan_warnings(r1)}")
    # The store's record is that last success (read after the WARNINGs,
    # so at least the limit old).
    check(age_warned is not None and age_warned >= limit / 1e6 - 50,
          f"the store says the last success was {age_warned} ms ago, when the "
          f"replicas found none for {limit / 1e6:.0f} ms")
    t_stop = now_ns()
    r1.stop()

    def runs_again(r):
        return [l for l in r.lines("INFO") if f"{NAME} runs again" in l]
    wait_until(lambda: all(runs_again(r) for r in others), 3.0,
               f"replicas 2 and 3 to log that {NAME} runs again")
    t.wait_runs(ns, 2, after_ns=now_ns())
    age_after = b.success_age_ms(ns)
    check(age_after is not None and 0 <= age_after < 500,
          f"the store says the last success was {age_after} ms ago, with a "
          "replica that succeeds every interval")
    for r in others:
        r.terminate()
    for r in others:
        r.wait_stopped()

    runs = b.runs(ns)
    check_replica_logs(t.scenario_replicas)
    check_no_overlap(runs)
    check_points_once(runs)
    check_fence(runs)
    failed = [r for r in runs if r.sink == "failed"]
    check(failed and all(r.replica == 1 and r.start > t_fail - IV_NS and r.token > 0
                         for r in failed),
          f"failed runs other than replica 1's after the fail file: {failed[:3]}")
    check_tokens([r for r in runs if r.sink != "failed"], b.RETAKE_KEEPS_TOKEN)
    taker = first_after(runs, t_stop, exclude=1)
    check(taker is not None and taker.sink == "ok", f"no replica succeeded after "
          f"the failing holder stopped: {taker}")
    handover = taker.due - t_stop
    check(handover <= 2 * IV_NS + 50 * MS, f"replica {taker.replica} took over "
          f"{handover / 1e6:.0f} ms after the failing holder stopped")
    again = {r.rid: (log_time_ns(runs_again(r)[0]) - t_stop) / 1e6 for r in others}
    how = {r.rid: runs_again(r)[0].split(": ", 2)[-1] if ": " in runs_again(r)[0]
           else "" for r in others}
    return (f"replica 1's runs failed from {(t_fail - last_ok.end) / 1e6:.0f} ms "
            f"after its last success; the orphan WARNING came "
            + ", ".join(f"{d / 1e6:.0f} ms" for d in delays)
            + f" after it on replicas 2, 3 (limit {limit / 1e6:.0f} ms; they said "
            f"{' and '.join(said)} s), none on the holder; store's last success "
            f"{age_warned} ms old then; {len(failed)} failed runs; after replica 1 "
            f"stopped, replica {taker.replica} ran {handover / 1e6:.0f} ms later, "
            f"'runs again' after "
            + ", ".join(f"{v:.0f} ms on {k} ({how[k][:40]})" for k, v in again.items())
            + f"; store's last success {age_after} ms old; "
            + t.report([r for r in runs if r.sink != "failed"], [handover],
                       span_runs=runs))


def s11_store_loss(t):
    """The store loses the lease's records while a replica holds it (Redis:
    an instance restarted without persistence, emulated by a DEL of the
    lease's key, token counter and state hash; PostgreSQL: a DELETE of its
    row). The other replicas are paused (SIGSTOP) meanwhile, so that the
    holder is the one to find its lease gone at its next renewal and take
    it anew: its tokens restart at 1, below the fence of the sink, which
    refuses every write of the new holding, and the library logs a
    WARNING that the tokens went back. Then the remedy the headers give:
    the store's token set above the fence. PostgreSQL: the holder's next
    renewal fails (its token changed), and it takes its row back with the
    new token, which the sink takes. Redis: the holder goes on with its
    token until a new holding (the script does not hand a renewed holding
    the counter's new value), so its writes are still refused; the next
    holding's (after a stop) are taken. No stale write is ever accepted,
    and no point runs twice."""
    b = t.backend
    ns = t.ns("loss")
    kw = dict(timeout=b.SHORT_TIMEOUT)
    r1 = t.start(1, ns, **kw)
    t.wait_runs(ns, 3, replica=1)
    reps = [r1, t.start(2, ns, **kw), t.start(3, ns, **kw)]
    for r in reps[1:]:
        r.wait_started()
    t.wait_intervals(ns, 2)
    # A first handover, so that the sink's fence is above 1.
    sleep_to_phase(0.5)
    t_stop1 = now_ns()
    r1.stop()
    t.wait_runs(ns, 3, after_ns=t_stop1, exclude=1)
    x = t.holder(ns, reps)
    y = next(r for r in reps[1:] if r is not x)
    fence = max(r.token for r in b.runs(ns))

    def went_back():
        return [l for l in x.lines("WARNING", "loopsvc") if "went back" in l]
    y.pause()
    try:
        sleep_to_phase(0.5)
        t_loss = now_ns()
        how = b.lose_records(ns)
        # At its next renewal (100 ms at most) it finds its lease gone, and
        # its next due run takes it anew.
        wait_until(lambda: len([r for r in t.runs_after(ns, t_loss, x.rid)
                                if r.token < fence]) >= 3, 3.0,
                   f"3 runs of replica {x.rid} with a token below {fence}")
        wait_until(went_back, 1.0, f"replica {x.rid} to log that the tokens "
                   "went back")
        # The remedy.
        t_fix = now_ns()
        b.set_token(ns, fence + 1)
        if b.name == "pg":
            wait_until(lambda: [r for r in t.runs_after(ns, t_fix, x.rid)
                                if r.token == fence + 1 and r.sink == "ok"], 3.0,
                       f"replica {x.rid} to run with token {fence + 1}")
        t.wait_runs(ns, 3, after_ns=now_ns(), replica=x.rid)
    finally:
        y.resume()
    t.wait_intervals(ns, 2)
    sleep_to_phase(0.5)
    t_stop2 = now_ns()
    x.stop()
    t.wait_runs(ns, 3, seconds=3.0, after_ns=t_stop2, replica=y.rid)
    y.stop()

    runs = b.runs(ns)
    check_replica_logs(t.scenario_replicas)
    check_no_overlap(runs)
    check_points_once(runs)
    check_fence(runs)
    lost = [r for r in runs if r.start > t_loss and r.start < t_fix]
    new = [r for r in lost if r.token < fence]
    check(new and min(r.token for r in new) == 1, f"after the loss, replica "
          f"{x.rid}'s tokens did not start again at 1: {new[:3]}")
    check(all(r.sink == "stale" for r in new), f"the sink took writes of tokens "
          f"below its fence {fence}: {[r for r in new if r.sink != 'stale'][:3]}")
    wb = went_back()
    check(len(wb) == 1 and f"went back from {fence} to 1" in wb[0],
          f"replica {x.rid} did not log once that the tokens went back from "
          f"{fence} to 1: {wb}")
    fixed = [r for r in runs if r.replica == x.rid and r.start > t_fix]
    if b.name == "pg":
        check(any(r.token == fence + 1 and r.sink == "ok" for r in fixed),
              f"replica {x.rid} did not take the new token {fence + 1}: {fixed[:3]}")
        remedy = (f"the holder took the new token {fence + 1} at its next "
                  "renewal, and the sink took its writes")
    else:
        kept = [r for r in fixed if r.token < fence]
        remedy = (f"the holder kept token {kept[0].token if kept else '?'} "
                  f"after the counter was set to {fence + 1}: {len(kept)} more "
                  f"of its writes refused, until the next holding")
    ys = [r for r in runs if r.replica == y.rid and r.start > t_stop2]
    check(ys and all(r.token > fence + 1 and r.sink == "ok" for r in ys),
          f"the next holding (replica {y.rid}) did not get a token above "
          f"{fence + 1} that the sink takes: {ys[:3]}")
    retake = min(new, key=lambda r: r.start)
    refused = sum(r.sink == "stale" for r in runs)
    return (f"{how} while replica {x.rid} held token {fence}: it took it "
            f"anew {(retake.due - t_loss) / 1e6:.0f} ms later with token "
            f"{retake.token} and logged that tokens went back; the sink refused "
            f"{len(new)} writes until the remedy; {remedy}; replica {y.rid} "
            f"then got token {ys[0].token}; {refused} writes refused in all; "
            f"{token_note(runs)}; "
            + t.report(runs, [retake.due - t_loss, ys[0].due - t_stop2]))


def s12_network(t):
    """Each replica reaches the server through its own proxy. A partition:
    the holder's proxy forwards nothing and keeps its connections open
    (no end is seen on either side). The holder stops running when its
    renewal times out, before its lease lapses in the store, and another
    replica takes over once it lapses; the proxy forwards again and the
    holder connects again. Then a cut: the new holder's proxy closes its
    connections and its port (the server sees the session end;
    PostgreSQL frees its rows at once, Redis keeps the key until its TTL),
    and opens again. No run overlaps another, no point runs twice, and no
    stale write is taken."""
    b = t.backend
    ns = t.ns("net")
    timeout = b.SHORT_TIMEOUT
    proxies = {rid: Proxy(b.upstream) for rid in (1, 2, 3)}
    for p in proxies.values():
        p.up()
    try:
        reps = [t.start(rid, ns, address=b.address_via(proxies[rid].port),
                        timeout=timeout) for rid in (1, 2, 3)]
        ttl, model = reps[0].lease_ttl()
        t.wait_runs(ns, 10)
        h1 = t.holder(ns, reps)
        sleep_to_phase(0.5)
        t_freeze = now_ns()
        proxies[h1.rid].freeze()
        part_bound = ttl + 2 * IV_NS
        t.wait_runs(ns, 3, seconds=part_bound / 1e9 + 3.0, after_ns=t_freeze,
                    exclude=h1.rid)
        proxies[h1.rid].thaw()
        n1 = len(reconnected(h1))
        wait_until(lambda: len(reconnected(h1)) > n1, 5.0,
                   f"replica {h1.rid} to connect again after the partition")
        h2 = t.holder(ns, reps)
        check(h2 is not h1, f"replica {h1.rid} holds the lease again")
        sleep_to_phase(0.5)
        t_cut = now_ns()
        proxies[h2.rid].down()
        cut_bound = b.lost_conn_takeover_bound_ns(ttl) + IV_NS
        t.wait_runs(ns, 3, seconds=cut_bound / 1e9 + 3.0, after_ns=t_cut,
                    exclude=h2.rid)
        n2 = len(reconnected(h2))
        proxies[h2.rid].up()
        wait_until(lambda: len(reconnected(h2)) > n2, 5.0,
                   f"replica {h2.rid} to connect again after the cut")
        t.wait_intervals(ns, 3)
        for r in reps:
            r.terminate()
        for r in reps:
            r.wait_stopped()
    finally:
        for p in proxies.values():
            p.down()
    runs = b.runs(ns)
    check_safe(runs, t.scenario_replicas, b, ns)
    take1 = first_after(runs, t_freeze, exclude=h1.rid)
    hand1 = take1.due - t_freeze
    check(hand1 <= part_bound + SLACK_NS, f"replica {take1.replica} took over "
          f"{hand1 / 1e6:.0f} ms after the partition of replica {h1.rid}; the "
          f"bound is {part_bound / 1e6:.0f} ms: {take1}")
    # Not before the lease could lapse in the store: a TTL after the last
    # renewal, at most a third of the TTL before the partition.
    low = ttl - ttl // 3 - SLACK_NS
    check(hand1 >= low, f"replica {take1.replica} took over {hand1 / 1e6:.0f} ms "
          f"after the partition, before the lease could lapse ({low / 1e6:.0f} ms)")
    last1 = max(r.start for r in runs if r.replica == h1.rid and r.start < take1.start)
    stop_bound = hang_stop_bound_ns(ttl, model, timeout)
    check(last1 - t_freeze <= stop_bound, f"replica {h1.rid} ran "
          f"{(last1 - t_freeze) / 1e6:.0f} ms into the partition; the bound is "
          f"{stop_bound / 1e6:.0f} ms")
    take2 = first_after(runs, t_cut, exclude=h2.rid)
    hand2 = take2.due - t_cut
    check(hand2 <= cut_bound + SLACK_NS, f"replica {take2.replica} took over "
          f"{hand2 / 1e6:.0f} ms after the cut of replica {h2.rid}; the bound "
          f"is {cut_bound / 1e6:.0f} ms: {take2}")
    stray = [r for r in runs if r.replica == h2.rid and
             t_cut + 5 * MS < r.start < take2.start]
    check(not stray, f"replica {h2.rid} ran after its connection was cut: {stray[:3]}")
    return (f"partition of replica {h1.rid}: its last run "
            f"{(last1 - t_freeze) / 1e6:.0f} ms in (bound {stop_bound / 1e6:.0f}), "
            f"replica {take1.replica} took over {hand1 / 1e6:.0f} ms in (TTL "
            f"{ttl / 1e6:.0f} ms); cut of replica {h2.rid}: replica "
            f"{take2.replica} took over {hand2 / 1e6:.0f} ms later; "
            f"{token_note(runs)}; " + t.report(runs, [hand1, hand2]))


SCENARIOS = [s1_three_replicas, s2_kill_holder, s3_kill_connection, s4_outage,
             s5_bad_configuration, s6_server_hangs, s7_paused_holder,
             s8_many_services, s9_clock_skew, s10_orphaned, s11_store_loss,
             s12_network]


STRAYED = re.compile(r"strays from the grid by (-?\d+) ns")


def strayed_note(replicas):
    """The runs whose due times the library put more than 1 ms off its
    wall-clock grid (replica.c says so), for the report."""
    offs = [abs(int(m.group(1))) for r in replicas
            for m in STRAYED.finditer(r.stderr())]
    if not offs:
        return ""
    return (f"; {len(offs)} runs due up to {max(offs) / 1e6:.1f} ms off the "
            "wall-clock grid")


def dump_logs(replicas):
    for r in replicas:
        print(f"--- replica {r.rid} ({r.ns}), exit {r.proc.returncode}, stderr:")
        sys.stdout.write(r.stderr())
        print(f"--- replica {r.rid} stdout:")
        sys.stdout.write(r.stdout())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["pg", "redis"], required=True)
    ap.add_argument("--replica", required=True)
    ap.add_argument("--verbose", action="store_true",
                    help="print the replicas' logs of passing scenarios too")
    ap.add_argument("--figures", metavar="FILE",
                    help="write each scenario's figures (overlaps, stale "
                    "writes, points run twice and skipped, handovers) as JSON")
    ap.add_argument("scenarios", nargs="*", help="names to run (default: all)")
    args = ap.parse_args()

    var = {"pg": "LSVC_TEST_PG", "redis": "LSVC_TEST_REDIS"}[args.backend]
    target = os.environ.get(var)
    if not target:
        print(f"{var} is not set: skipped (.ci/servers.sh starts a server)")
        return SKIP
    try:
        backend = Pg(target) if args.backend == "pg" else Redis(target)
    except (Failure, OSError, RespError) as e:
        print(f"FAIL: cannot use the server in {var}: {e}")
        return 1

    failed = ran = 0
    results = {}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lsvc-lease-") as tmp:
        test = Test(backend, args.replica, tmp)
        for scenario in SCENARIOS:
            if args.scenarios and not any(n in scenario.__name__ for n in args.scenarios):
                continue
            if args.backend not in getattr(scenario, "backends", (args.backend,)):
                continue
            test.scenario_replicas = []
            test.fig = None
            ran += 1
            s0 = time.monotonic()
            try:
                note = scenario(test) + strayed_note(test.scenario_replicas)
                took = time.monotonic() - s0
                print(f"ok   {scenario.__name__} ({took:.1f} s): {note}")
                results[scenario.__name__] = dict(ok=True, seconds=round(took, 1),
                                                  figures=test.fig, note=note)
                if args.verbose:
                    dump_logs(test.scenario_replicas)
            except (Failure, RespError, OSError) as e:
                failed += 1
                print(f"FAIL {scenario.__name__} ({time.monotonic() - s0:.1f} s): {e}")
                results[scenario.__name__] = dict(ok=False, note=str(e))
                if not isinstance(e, Failure):
                    traceback.print_exc(file=sys.stdout)
                dump_logs(test.scenario_replicas)
            finally:
                for r in test.scenario_replicas:
                    if r.alive():
                        r.kill9()
            sys.stdout.flush()
        try:
            backend.cleanup(test.prefix, test.lease_names)
        except (Failure, OSError, RespError) as e:
            print(f"note: could not delete the records: {e}")
    print(f"{ran} scenarios, {failed} failed, "
          f"{time.monotonic() - t0:.1f} s")
    if args.figures:
        with open(args.figures, "w") as f:
            json.dump(dict(backend=args.backend, scenarios=results), f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
