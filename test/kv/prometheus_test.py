#!/usr/bin/env python3
"""kvserver's metrics as Prometheus itself reads them.

usage: prometheus_test.py --kvserver PATH

Starts kvserver with its HTTP port (-m 0), checks its /metrics with
`promtool check metrics`, then starts a real Prometheus on loopback that
scrapes it every second, with its configuration and its database in a
temporary directory, and asks Prometheus's query API for
loopsvc_runs_total until both of kvserver's chores are there. Stops both
servers, and expects each to exit 0. Exits 77 (a skip) when prometheus or
promtool is not installed (Debian: apt-get install prometheus).

Every wait is bounded; on a failure, what the servers said is printed.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

# The helpers the Python tests share, in test/.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import Failure, check, free_port, wait_until  # noqa: E402

SKIP = 77
JOB = "kvserver"
SERVICES = {"kv-expiry", "kv-stats"}  # kvserver's chores
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
START_BOUND = 10.0    # kvserver printing its ports
READY_BOUND = 60.0    # Prometheus answering /-/ready
SCRAPED_BOUND = 60.0  # the first scrape showing in a query
STOP_BOUND = 30.0     # either server ending after SIGTERM


def http_get(port, path):
    """(status, Content-Type, body) of GET http://127.0.0.1:port/path;
    None when nothing listens there yet."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()
    except (ConnectionError, urllib.error.URLError):
        return None


class Server:
    """A server process, its output kept in a file of the temporary
    directory, for the failure report."""

    def __init__(self, name, argv, tmp):
        self.name = name
        self.log_path = os.path.join(tmp, name + ".log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log,
                                         stderr=subprocess.STDOUT)

    def output(self):
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def check_running(self):
        check(self.proc.poll() is None,
              f"{self.name} exited with status {self.proc.returncode}")

    def stop(self):
        """SIGTERM, then SIGKILL after STOP_BOUND; what went wrong, or
        None when it exited 0 in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(STOP_BOUND)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return f"{self.name} still ran {STOP_BOUND} s after SIGTERM"
        return f"{self.name} exited with status {status}" if status else None


def start_kvserver(path, tmp):
    """kvserver on free ports; returns it and its HTTP port, read from the
    line it prints once it serves."""
    kv = Server("kvserver", [path, "-m", "0", "0"], tmp)
    prefix = "http on 127.0.0.1:"

    def http_port():
        kv.check_running()
        for line in kv.output().splitlines(keepends=True):
            if line.startswith(prefix) and line.endswith("\n"):
                return int(line[len(prefix):])
        return None

    return kv, wait_until(http_port, START_BOUND, "kvserver's HTTP port")


def check_metrics(port):
    """kvserver's /metrics: its content type, and promtool's lint."""
    status, content_type, body = http_get(port, "/metrics")
    check(status == 200, f"GET /metrics answered {status}: {body}")
    check(content_type == CONTENT_TYPE,
          f"GET /metrics: Content-Type {content_type!r}, not {CONTENT_TYPE!r}")
    lint = subprocess.run(["promtool", "check", "metrics"], input=body,
                          capture_output=True, text=True, timeout=60)
    check(lint.returncode == 0,
          f"promtool check metrics failed:\n{lint.stdout}{lint.stderr}\n"
          f"--- the metrics:\n{body}")


def write_config(tmp, kv_port):
    """A configuration that scrapes kvserver every second, checked by
    promtool; returns its path."""
    path = os.path.join(tmp, "prometheus.yml")
    with open(path, "w") as f:
        f.write("global:\n"
                "  scrape_interval: 1s\n"
                "  scrape_timeout: 1s\n"
                "scrape_configs:\n"
                f"  - job_name: {JOB}\n"
                "    static_configs:\n"
                f"      - targets: ['127.0.0.1:{kv_port}']\n")
    lint = subprocess.run(["promtool", "check", "config", path],
                          capture_output=True, text=True, timeout=60)
    check(lint.returncode == 0,
          f"promtool check config failed:\n{lint.stdout}{lint.stderr}")
    return path


def scraped_services(prom, port):
    """The services of the job's loopsvc_runs_total samples that
    Prometheus holds, each with a value; empty until its first scrape."""
    prom.check_running()
    query = urllib.parse.urlencode({"query": "loopsvc_runs_total"})
    answer = http_get(port, "/api/v1/query?" + query)
    if answer is None or answer[0] != 200:
        return set()
    reply = json.loads(answer[2])
    check(reply.get("status") == "success", f"the query failed: {reply}")
    return {r["metric"].get("service") for r in reply["data"]["result"]
            if r["metric"].get("job") == JOB and float(r["value"][1]) >= 0}


def scrape(kvserver, tmp, servers):
    """Starts the servers, each added to `servers`, and waits for
    Prometheus to hold kvserver's samples."""
    kv, kv_port = start_kvserver(kvserver, tmp)
    servers.append(kv)
    check_metrics(kv_port)
    port = free_port()
    prom = Server("prometheus", [
        "prometheus", "--config.file=" + write_config(tmp, kv_port),
        "--storage.tsdb.path=" + os.path.join(tmp, "data"),
        f"--web.listen-address=127.0.0.1:{port}"], tmp)
    servers.append(prom)

    def ready():
        prom.check_running()
        return (http_get(port, "/-/ready") or (0,))[0] == 200

    wait_until(ready, READY_BOUND, "Prometheus to be ready")
    wait_until(lambda: SERVICES <= scraped_services(prom, port),
               SCRAPED_BOUND,
               f"loopsvc_runs_total of {sorted(SERVICES)} in Prometheus")


def run(kvserver, tmp):
    servers = []
    failure = None
    try:
        scrape(kvserver, tmp, servers)
    except Failure as e:
        failure = str(e)
    finally:
        # Prometheus first, then what it scrapes; each whatever the other did.
        stops = [server.stop() for server in reversed(servers)]
    failure = failure or next((p for p in stops if p), None)
    if failure:
        for server in servers:
            print(f"--- {server.name}'s output:\n{server.output()}")
        raise Failure(failure)
    print(f"Prometheus scraped {sorted(SERVICES)} from kvserver; both "
          "stopped cleanly.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kvserver", required=True)
    args = parser.parse_args()
    missing = [p for p in ("prometheus", "promtool") if not shutil.which(p)]
    if missing:
        print(f"{' and '.join(missing)} not found "
              "(Debian: apt-get install prometheus)")
        # CI sets it, so that the scrape cannot pass by being skipped.
        return 1 if os.environ.get("LSVC_REQUIRE_PROMETHEUS") else SKIP
    try:
        with tempfile.TemporaryDirectory(prefix="kvserver-prometheus.") as tmp:
            run(args.kvserver, tmp)
    except Failure as e:
        print(f"FAIL: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
