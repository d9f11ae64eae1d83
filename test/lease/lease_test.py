#!/usr/bin/env python3
"""Leases against a real server, with replica processes.

usage: lease_test.py --backend pg|redis --replica PATH

Starts `replica` processes that share one service under a lease held in
PostgreSQL (LSVC_TEST_PG, a libpq conninfo of a server where this may
create a database) or Redis (LSVC_TEST_REDIS, an address), kills them, cuts
their connections, takes the server away through a proxy, and checks the
runs they record: no two runs overlap, no due point runs twice, the lease
moves on when its holder goes, and every run has a fencing token that
never goes back and rises with every new holding, which a fenced sink
accepts (check_tokens). Exits 77 (a skip) when the variable
is not set. LSVC_TEST_PG_AUTH, when set, is a conninfo (without password)
of a role that must log in with a password, for the wrong-password case.

Every wait is bounded; on a failure the logs of the scenario's replicas
are printed. Python's time.monotonic_ns() reads CLOCK_MONOTONIC, the
clock the replicas record on.
"""
import argparse
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


def now_ns():
    return time.monotonic_ns()


class Run:
    """One run a replica recorded: its fencing token (0: none), its
    holding (the replica's lease_changes then) and what the fenced sink
    said of its write."""

    def __init__(self, replica, point, start, end, token, holding, sink):
        self.replica, self.point = int(replica), int(point)
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
    replica that lost the lease only by its own count (a lost reply) and
    takes its own key back is still the store's one holding, with the same
    token, as long as no other replica held it in between."""
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
    """The tokens in the order of their holdings, for the report."""
    seq = []
    for (rid, _), hruns in holdings(runs).items():
        seq.append(f"{hruns[0].token}@{rid}")
    return "tokens " + " ".join(seq[:8]) + (" ..." if len(seq) > 8 else "")


def check_safe(runs, replicas=(), backend=None, ns=None):
    for r in replicas:
        off = [l for l in r.stderr().splitlines() if "off the grid" in l]
        check(not off, f"replica {r.rid} ran off the shared grid of due points, "
              f"so points cannot be told apart: {off[0] if off else ''}")
        bare = [l for l in r.stderr().splitlines() if "without a fencing token" in l]
        check(not bare, f"replica {r.rid} ran without a token: {bare[:1]}")
    check(runs, "no run was recorded at all")
    check_no_overlap(runs)
    check_points_once(runs)
    if backend is not None:
        check_tokens(runs, backend.RETAKE_KEEPS_TOKEN)
        backend.check_sink(ns, runs)


def first_after(runs, t_ns, exclude=None):
    later = [r for r in runs if r.start > t_ns and r.replica != exclude]
    return min(later, key=lambda r: r.start) if later else None


# --- A replica process -----------------------------------------------------

class Replica:
    def __init__(self, test, rid, address, ns, timeout=None, record=True,
                 seconds=0):
        self.test, self.rid, self.ns = test, rid, ns
        base = os.path.join(test.tmp, f"{ns}-{rid}")
        self.err_path, self.out_path = base + ".err", base + ".out"
        cmd = [test.replica, "--backend", test.backend.name, "--address", address,
               "--ns", ns, "--id", str(rid), "--interval", str(INTERVAL),
               "--seconds", str(seconds), "--name", NAME]
        if record:
            cmd += ["--record", test.backend.record_address]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
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

    def lines(self, level):
        tag = f"| {level} | loopsvc.{NAME} -"
        return [l for l in self.stderr().splitlines() if tag in l]

    def warnings(self):
        """The lease's WARNINGs: those that name its store."""
        word = self.test.backend.STORE
        return [l for l in self.lines("WARNING") if word in l]

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


# --- A proxy that can take the server away --------------------------------

class Proxy:
    """127.0.0.1:port forwarded to the server. down() cuts every connection
    and closes the port (connections are refused), up() opens it again, and
    freeze() keeps connections open, and accepts new ones, but forwards
    nothing: a server that hangs."""

    def __init__(self, upstream, port=None):
        self.upstream = upstream  # ("unix", path) or ("tcp", (host, port))
        self.port = port or free_port()
        self.lock = threading.Lock()  # protects socks and listener
        self.socks = set()
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
    STORE = "PostgreSQL"
    DB = "lsvc_lease_test"

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
                  "ADD COLUMN IF NOT EXISTS sink text NOT NULL DEFAULT ''; "
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

    def lease_address_for(self, rid):
        # Names the session in pg_stat_activity, so that the holder of the
        # lock can be told from the records' holder.
        return with_params(self.db, application_name=f"lsvc-replica-{rid}")

    def address_via(self, port):
        return with_params(self.db, host="127.0.0.1", hostaddr="127.0.0.1",
                           port=str(port))

    def runs(self, ns):
        out = self.psql(self.db, "SELECT replica, point, start_ns, end_ns, token, "
                        "holding, sink FROM lsvc_lease_runs WHERE ns = "
                        f"'{ns}' ORDER BY start_ns")
        return [Run(*line.split("|")) for line in out.splitlines() if line]

    def sink(self, ns):
        out = self.psql(self.db, "SELECT fence, replica, point FROM "
                        f"lsvc_lease_sink WHERE ns = '{ns}'").strip()
        check(out, f"the sink has no row for {ns}")
        return [int(x) for x in out.split("|")]

    def check_sink(self, ns, runs):
        """The sink holds the last run's write and the highest token."""
        last = max(runs, key=lambda r: r.start)
        fence, replica, point = self.sink(ns)
        check(fence == max(r.token for r in runs) and
              (replica, point) == (last.replica, last.point),
              f"the sink holds token {fence} of replica {replica} at point "
              f"{point}, not the last run's: {last}")

    def kill_lease_connection(self, ns, holder):
        # The query of loopsvc-pg.h, with the key as a signed bigint, which
        # is what the shifted expression yields for the keys with the top
        # bit set too.
        key = pg_key(ns, NAME)
        out = self.psql(self.db, "SELECT l.pid, a.application_name, "
                        "pg_terminate_backend(l.pid) FROM pg_locks l JOIN "
                        "pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = "
                        "'advisory' AND l.objsubid = 1 AND l.granted AND "
                        f"((l.classid::bigint << 32) | l.objid::bigint) = {key}")
        rows = [line.split("|") for line in out.splitlines() if line]
        check(len(rows) == 1, f"pg_locks shows {len(rows)} holders of the lock, not 1")
        pid, app, killed = rows[0]
        check(app == f"lsvc-replica-{holder}", f"the lock is held by the session "
              f"of {app!r}, but the last run was replica {holder}'s")
        check(killed == "t", f"pg_terminate_backend({pid}) said {killed!r}")

    def cleanup(self, prefix, namespaces):
        keys = ", ".join(str(pg_key(ns, NAME)) for ns in namespaces) or "0"
        self.psql(self.db, f"DELETE FROM lsvc_lease_runs WHERE ns LIKE '{prefix}%'; "
                  f"DELETE FROM lsvc_lease_sink WHERE ns LIKE '{prefix}%'; "
                  f"DELETE FROM loopsvc_lease_token WHERE key IN ({keys})")

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
    RECONNECTED = "Connected to PostgreSQL again"
    # Every lock gained bumps the token, a retake of its own included.
    RETAKE_KEEPS_TOKEN = False
    # After its holder dies, the lock is free as soon as the server sees
    # the session end: the next due point, or the one after.
    def takeover_bound_ns(self):
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
    STORE = "Redis"
    TTL_INTERVALS = 3  # LSVC_REDIS_TTL_INTERVALS

    def __init__(self, address):
        self.lease_address = address
        self.record_address = address
        self.upstream, self.password = parse_redis_address(address)
        self.conn = Resp(self.upstream, self.password)
        check(self.conn.cmd("PING") == "PONG", "Redis does not answer PING")

    def lease_address_for(self, rid):
        return self.lease_address

    def address_via(self, port):
        if self.password:
            return f"redis://:{urllib.parse.quote(self.password)}@127.0.0.1:{port}"
        return f"127.0.0.1:{port}"

    def runs(self, ns):
        items = self.conn.cmd("LRANGE", f"lsvc-test:runs:{ns}", 0, -1)
        return sorted((Run(*i.split(":")) for i in items), key=lambda r: r.start)

    def check_sink(self, ns, runs):
        """The sink holds the last run's write and the highest token."""
        last = max(runs, key=lambda r: r.start)
        h = self.conn.cmd("HGETALL", f"lsvc-test:sink:{ns}") or []
        got = dict(zip(h[::2], h[1::2]))
        want = {"fence": str(max(r.token for r in runs)),
                "replica": str(last.replica), "point": str(last.point)}
        check(got == want, f"the sink holds {got}, not the last run's {want}")

    def clients(self):
        out = []
        for line in self.conn.cmd("CLIENT", "LIST").splitlines():
            out.append(dict(f.split("=", 1) for f in line.split() if "=" in f))
        return out

    def kill_lease_connection(self, ns, holder):
        # Every replica names its lease connection alike, and every one's
        # last command is a script (the holder's extends its key, the
        # others' try to take it), so the holder's cannot be told apart:
        # all are cut. The holder's key outlives the cut, so it is still
        # the holder that must stop at once and find its key again.
        name = f"loopsvc-lease:{ns}:{NAME}"
        lease = [c for c in self.clients() if c.get("name") == name]
        check(lease, f"CLIENT LIST shows no lease connection named {name}")
        for c in lease:
            killed = self.conn.cmd("CLIENT", "KILL", "ID", c["id"])
            check(killed == 1, f"CLIENT KILL ID {c['id']} said {killed!r}")

    def cleanup(self, prefix, namespaces):
        for pattern in (f"lsvc-test:runs:{prefix}*", f"lsvc-test:sink:{prefix}*",
                        f"loopsvc:token:{prefix}*"):
            for key in self.conn.cmd("KEYS", pattern):
                self.conn.cmd("DEL", key)

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

    RECONNECTED = "answers again"
    # A replica that takes its own key back after a lost reply is still
    # the one holding, whose token the extend script returns.
    RETAKE_KEEPS_TOKEN = True

    def takeover_bound_ns(self):
        # The dead holder's key lapses TTL after its last extension, which
        # came before the kill; the next due point after that takes it.
        return (self.TTL_INTERVALS + 1) * IV_NS


# --- The scenarios ---------------------------------------------------------

class Test:
    def __init__(self, backend, replica, tmp):
        self.backend, self.replica, self.tmp = backend, replica, tmp
        self.prefix = f"{backend.name}-{os.getpid()}-{int(time.time())}-"
        self.scenario_replicas = []
        self.namespaces = set()

    def ns(self, what):
        self.namespaces.add(self.prefix + what)
        return self.prefix + what

    def start(self, rid, ns, address=None, **kw):
        return Replica(self, rid, address or self.backend.lease_address_for(rid),
                       ns, **kw)

    def wait_runs(self, ns, count, seconds=5.0, after_ns=0):
        return wait_until(
            lambda: len([r for r in self.backend.runs(ns) if r.start > after_ns]) >= count,
            seconds, f"{count} runs recorded in {ns}")

    def holder(self, ns, replicas):
        """The replica that made the latest run."""
        latest = max(self.backend.runs(ns), key=lambda r: r.start)
        return next(r for r in replicas if r.rid == latest.replica)


def s1_three_replicas(t):
    """Three replicas for 3 s: one runs each point, none overlap, and
    nearly every point of the window runs. At 2 s the holder stops, and
    releases the lease to a new holding with a higher token."""
    ns = t.ns("three")
    reps = [t.start(i, ns) for i in (1, 2, 3)]
    time.sleep(2.0)
    t.holder(ns, reps).stop()
    time.sleep(1.0)
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
    check(span >= 0.8 * 3.0 / INTERVAL, f"runs spanned only {span} points in 3 s")
    return f"{len(runs)} runs of {span} points, by replicas " \
           f"{sorted({r.replica for r in runs})}; {token_note(runs)}"


def s2_kill_holder(t):
    """kill -9 of the holder: another replica takes over in time."""
    ns = t.ns("kill")
    reps = [t.start(i, ns) for i in (1, 2, 3)]
    t.wait_runs(ns, 10)
    holder = t.holder(ns, reps)
    # Between two due points, so that the kill does not race the holder's
    # own run of the next one.
    time.sleep((IV_NS // 2 - now_ns() % IV_NS) % IV_NS / 1e9)
    t_kill = now_ns()
    holder.kill9()
    time.sleep(1.0)
    others = [r for r in reps if r is not holder]
    for r in others:
        r.terminate()
    for r in others:
        r.wait_stopped()
    runs = t.backend.runs(ns)
    check_safe(runs, t.scenario_replicas, t.backend, ns)
    after = first_after(runs, t_kill, exclude=holder.rid)
    check(after is not None, f"no replica took over from replica {holder.rid}")
    late = after.point * IV_NS - t_kill
    check(0 < late <= t.backend.takeover_bound_ns() + SLACK_NS,
          f"replica {after.replica} took over {late / 1e6:.0f} ms after the kill "
          f"of replica {holder.rid}; the bound is "
          f"{t.backend.takeover_bound_ns() / 1e6:.0f} ms: {after}")
    stray = [r for r in runs if r.replica == holder.rid and r.start > t_kill]
    check(not stray, f"the killed replica ran after its death: {stray}")
    return f"replica {after.replica} took over from replica {holder.rid} " \
           f"{late / 1e6:.0f} ms after the kill; {token_note(runs)}"


def s3_kill_connection(t):
    """The server ends the holder's lease connection: the holder stops
    running at once, reconnects, and nothing overlaps."""
    ns = t.ns("conn")
    reps = [t.start(i, ns, timeout=1.0) for i in (1, 2, 3)]
    t.wait_runs(ns, 10)
    holder = t.holder(ns, reps)
    t_kill0 = now_ns()
    t.backend.kill_lease_connection(ns, holder.rid)
    t_kill = now_ns()
    # Its reconnection waits 100 ms, then it asks again.
    wait_until(lambda: any(t.backend.RECONNECTED in l for l in holder.lines("INFO")),
               3.0, f"replica {holder.rid} to reconnect")
    time.sleep(0.5)
    check(holder.alive(), f"replica {holder.rid} died when its connection was killed")
    for r in reps:
        r.terminate()
    for r in reps:
        r.wait_stopped()
    runs = t.backend.runs(ns)
    check_safe(runs, t.scenario_replicas, t.backend, ns)
    # A run that began after the kill needed an answer after it; the first
    # such answer says the connection is gone, and the backoff keeps it from
    # asking again for 100 ms.
    stray = [r for r in runs if r.replica == holder.rid
             and t_kill + 5 * MS < r.start < t_kill + 100 * MS]
    check(not stray, f"replica {holder.rid} ran after its lease connection "
          f"was killed: {stray}")
    nxt = first_after(runs, t_kill)
    check(nxt is not None, "nothing ran after the kill")
    late = nxt.point * IV_NS - t_kill
    bound = t.backend.takeover_bound_ns() + 2 * IV_NS
    check(late <= bound + SLACK_NS,
          f"the first run after the kill came {late / 1e6:.0f} ms later; the "
          f"bound is {bound / 1e6:.0f} ms: {nxt}")
    warnings = holder.warnings()
    check(len(warnings) == 1, f"replica {holder.rid} logged {len(warnings)} "
          f"WARNINGs, not 1, for one lost connection: {warnings}")
    return f"replica {holder.rid} lost its connection (kill took " \
           f"{(t_kill - t_kill0) / 1e6:.0f} ms); replica {nxt.replica} ran " \
           f"{late / 1e6:.0f} ms later; {token_note(runs)}"


def s4_outage(t):
    """The server is away at start, comes, goes away mid-run and comes
    back: the replicas stay up, log each outage once or twice (not once
    per attempt), and the lease is held again."""
    ns = t.ns("outage")
    proxy = Proxy(t.backend.upstream)
    via = t.backend.address_via(proxy.port)
    reps = [t.start(i, ns, address=via, timeout=0.5) for i in (1, 2)]
    try:
        # Attempts at 0, 0.1, 0.3, 0.7 and 1.5 s: four fail in 1.2 s.
        time.sleep(1.2)
        for r in reps:
            check(r.alive(), f"replica {r.rid} died while the server was away")
            w = r.warnings()
            check(len(w) == 1, f"replica {r.rid} logged {len(w)} WARNINGs, not "
                  f"1, in 1.2 s with the server away from the start: {w}")
        check(not t.backend.runs(ns), "something ran with the server away")
        t_up = now_ns()
        proxy.up()
        t.wait_runs(ns, 5, seconds=4.0)
        resumed = (t.backend.runs(ns)[0].start - t_up) / 1e9
        before = {r.rid: len(r.warnings()) for r in reps}

        time.sleep(0.3)
        t_down = now_ns()
        proxy.down()
        time.sleep(1.0)
        t_up2 = now_ns()
        proxy.up()
        t.wait_runs(ns, 5, seconds=4.0, after_ns=t_up2)
        time.sleep(0.3)
        for r in reps:
            check(r.alive(), f"replica {r.rid} died when the server went away")
            w = r.warnings()[before[r.rid]:]
            # One for the lost session, one more if the reconnects fail
            # for another reason.
            check(1 <= len(w) <= 2, f"replica {r.rid} logged {len(w)} WARNINGs "
                  f"for one outage of 1 s: {w}")
            check(any(t.backend.RECONNECTED in l for l in r.lines("INFO")),
                  f"replica {r.rid} did not log its reconnection")
        for r in reps:
            r.terminate()
        for r in reps:
            r.wait_stopped()
    finally:
        proxy.down()
    runs = t.backend.runs(ns)
    check_safe(runs, t.scenario_replicas, t.backend, ns)
    during = [r for r in runs if t_down + 5 * MS < r.start < t_up2]
    check(not during, f"runs while the server was away: {during}")
    after = first_after(runs, t_up2)
    check(after is not None, "no run after the server came back")
    loops = sum(r.stats()["loops"] for r in reps)
    check(loops == len(runs), f"the replicas made {loops} runs but recorded {len(runs)}")
    return f"first runs {resumed:.2f} s after the server came, " \
           f"{(after.start - t_up2) / 1e9:.2f} s after it came back; " \
           f"{token_note(runs)}"


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
        time.sleep(1.0)
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
    (its confirmation times out), and a stop, then or at once, is still
    bounded by the lease's timeout."""
    ns, ns_now = t.ns("hang"), t.ns("hang-stop")
    proxy, proxy_now = Proxy(t.backend.upstream), Proxy(t.backend.upstream)
    proxy.up()
    proxy_now.up()
    r = t.start(1, ns, address=t.backend.address_via(proxy.port), timeout=0.3)
    r_now = t.start(2, ns_now, address=t.backend.address_via(proxy_now.port),
                    timeout=0.3)
    try:
        t.wait_runs(ns, 5)
        t.wait_runs(ns_now, 5)
        # Right after a run, so that the stop finds it holding the lease
        # and its unlock meets the hung server.
        n = len(t.backend.runs(ns_now))
        wait_until(lambda: len(t.backend.runs(ns_now)) > n, 2.0, "one more run")
        proxy_now.freeze()
        took_now = r_now.stop(2.0)
        t_freeze = now_ns()
        proxy.freeze()
        time.sleep(0.8)
        check(r.alive(), "the replica died when the server hung")
        check(r.warnings(), "no WARNING when the server hung")
        took = r.stop(2.0)
    finally:
        proxy.down()
        proxy_now.down()
    runs = t.backend.runs(ns)
    check_safe(runs, t.scenario_replicas, t.backend, ns)
    stray = [x for x in runs if x.start > t_freeze + 5 * MS]
    check(not stray, f"runs after the server hung: {stray}")
    said = r_now.warnings()
    return f"stopped {took:.2f} s after SIGTERM with the server hung, " \
           f"{took_now:.2f} s when it hung as the stop began" + \
           (f" ({said[0].split(' - ', 1)[1][:70]}...)" if said else "")


SCENARIOS = [s1_three_replicas, s2_kill_holder, s3_kill_connection, s4_outage,
             s5_bad_configuration, s6_server_hangs]


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
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lsvc-lease-") as tmp:
        test = Test(backend, args.replica, tmp)
        for scenario in SCENARIOS:
            if args.scenarios and not any(n in scenario.__name__ for n in args.scenarios):
                continue
            test.scenario_replicas = []
            ran += 1
            s0 = time.monotonic()
            try:
                note = scenario(test)
                print(f"ok   {scenario.__name__} ({time.monotonic() - s0:.1f} s): {note}")
                if args.verbose:
                    dump_logs(test.scenario_replicas)
            except (Failure, RespError, OSError) as e:
                failed += 1
                print(f"FAIL {scenario.__name__} ({time.monotonic() - s0:.1f} s): {e}")
                if not isinstance(e, Failure):
                    traceback.print_exc(file=sys.stdout)
                dump_logs(test.scenario_replicas)
            finally:
                for r in test.scenario_replicas:
                    if r.alive():
                        r.kill9()
            sys.stdout.flush()
        try:
            backend.cleanup(test.prefix, test.namespaces)
        except (Failure, OSError, RespError) as e:
            print(f"note: could not delete the records: {e}")
    print(f"{ran} scenarios, {failed} failed, "
          f"{time.monotonic() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
