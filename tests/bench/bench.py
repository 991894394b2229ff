#!/usr/bin/env python3
"""sockscope overhead benchmark (prints figures; not a test).

Three variants, interleaved within every rep (their order rotated from rep to rep, so none
always runs first or last), all attaching to the benchmark's cgroup:
  without  nothing attached;
  empty    the same cgroup hooks attached, running empty programs that allow at once
           (`sockscope-peer empty-hooks CGROUP`): the floor any hook-based design pays;
  with     the real agent (`sockscope --cgroup-root CGROUP`).

Loads (--only, comma-separated keys; default all; `iperf3` stands for veth1,veth4,loopback,udp64).
Clients and servers all run in the measured cgroup (its sub-cgroup load/), except unbound:
  veth1      iperf3 TCP over a veth pair between two network namespaces, 1 stream (Gbit/s);
  veth4      the same with -P 4 (Gbit/s, sum received);
  loopback   iperf3 TCP over loopback, 1 stream (Gbit/s; noisy);
  udp64      iperf3 UDP over veth, 64-byte datagrams at the maximum rate (packets/s received);
  churn      wrk without keep-alive, one TCP connection per request, against
             `sockscope-peer http-server` (connections/s);
  keepalive  wrk with keep-alive against the same server, one connection per server thread:
             requests/s, and p99 latency as a row of its own (ms, lower is better); warns if
             the server closed connections anyway (TCP ActiveOpens close to the requests);
  dns        dnsperf at its maximum rate against unbound in the other namespace (queries/s).
Each row: the median of every variant, the median of the per-rep ratios empty/without and
with/without, and the spread: min..max of every variant and of the per-rep ratios.

After the throughput reps (bpf run-time stats off, as in production):
  - the agent's CPU at 1,000 new connections/s (`sockscope-peer connect-rate`) for 10 s,
    beside its idle CPU over a window as long;
then, with kernel.bpf_stats_enabled=1, stats passes (following --only), each a delta of run
time and runs per program (read before and after the pass, so passes don't mix), for the agent
(its /metrics) and for the empty hooks (the cgroup's programs by BPF_PROG_QUERY, their
run_time_ns/run_cnt from `bpftool prog show`):
  - kernel ns per invocation: TCP (veth1 + churn, and each alone), UDP (udp64 at a fixed ~100k
    packets/s, below saturation so preemption doesn't inflate run times), DNS (dnsperf at a fixed rate to port 53,
    and to port 5353 for the UDP accounting alone), DNS over TCP (dnsperf -m tcp at a fixed rate),
    resets (connects to a closed port) and drops (datagrams an nftables rule drops), the last two
    for the tracepoint programs, which have no empty counterpart;
  - per TCP connection (both ends in the measured cgroup), from the churn pass: invocations and
    ns of every program, sock_ops callbacks per connection among them;
  - DNS at the maximum rate: exact counts, answers forwarded, drops;
  - the agent's CPU during the throughput reps, and its peak RSS.
A JSON document with every figure ends the output (one line); --json PATH also writes it to PATH.

Usage (root): python3 tests/bench/bench.py [--reps 7] [--seconds 4] [--only veth1,churn,...]
                  [--skip throughput,cpu,stats,dnscheck] [--cpu-seconds 10] [--json PATH]
Run scripts/setup.sh and `cargo build --release --bins` first (bench.sh does both).
"""

import argparse
import ctypes
import json
import os
import re
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")
PEER = os.path.join(BIN, "sockscope-peer")
TAG = f"ssb{os.getpid() % 10000}"

VARIANTS = ("without", "empty", "with")
DRAIN_WAIT = 1.2  # the agent drains every 1 s: wait a little longer before reading its counters
HTTP_THREADS = 4
KEEPALIVE_CONNS = HTTP_THREADS  # the server serves one connection per thread at a time
UDP_LEN = 64
UDP_STATS_PPS = 100_000  # stats pass: well below what 2 CPUs saturate at
DNS_STATS_RATE = 50000  # below saturation (2 CPUs: ~85k/s), so run-time stats are not inflated by preemption
DNS_NAMES = [f"n{i}.bench.test" for i in range(20)]
DNS_TCP_STATS_RATE = 10000  # dnsperf -m tcp: queries/s (TCP framing and the tail-called parser)
RESETS = 20000  # connects to a closed port: each is answered with a reset
DROPS = 200000  # datagrams an nftables output rule drops (kfree_skb, reason NETFILTER_DROP)
DROP_PORT = 7777
CPU_RATE = 1000  # connections/s for the agent CPU measure
EMPTY_PREFIX = "sockscope_empt"  # program names are truncated to 15 characters

# Load key -> the rows it produces.
LOADS = {
    "veth1": ["veth1"],
    "veth4": ["veth4"],
    "loopback": ["loopback"],
    "udp64": ["udp64"],
    "churn": ["churn"],
    "keepalive": ["keepalive", "keepalive_p99"],
    "dns": ["dns"],
}
ALIASES = {"iperf3": ["veth1", "veth4", "loopback", "udp64"]}
# Row -> (label, unit, lower is better).
ROWS = {
    "veth1": ("veth TCP, 1 stream", "Gbit/s", False),
    "veth4": ("veth TCP, 4 streams", "Gbit/s", False),
    "loopback": ("loopback TCP, 1 stream", "Gbit/s", False),
    "udp64": (f"veth UDP {UDP_LEN} B, max rate", "pkt/s", False),
    "churn": ("churn, Connection: close", "conn/s", False),
    "keepalive": (f"keep-alive, {KEEPALIVE_CONNS} conns", "req/s", False),
    "keepalive_p99": ("keep-alive p99 latency", "ms", True),
    "dns": ("dnsperf, max rate", "queries/s", False),
}
# Agent program names, and the cgroup attach types (bpftool's old and new spellings) of each.
PROGRAMS = ["sockscope_sock_create", "sockscope_sock_release", "sockscope_sockops", "sockscope_egress",
            "sockscope_ingress"]
HOOK_PROGRAM = {
    "sock_create": "sockscope_sock_create", "cgroup_inet_sock_create": "sockscope_sock_create",
    "sock_release": "sockscope_sock_release", "cgroup_inet_sock_release": "sockscope_sock_release",
    "sock_ops": "sockscope_sockops", "cgroup_sock_ops": "sockscope_sockops",
    "egress": "sockscope_egress", "cgroup_inet_egress": "sockscope_egress",
    "ingress": "sockscope_ingress", "cgroup_inet_ingress": "sockscope_ingress",
}
# Programs on the traffic's own path that are not cgroup hooks (no empty counterpart): the TCP close
# tracepoint fires as each socket is destroyed, so its time is the connection's, not the agent's.
DATA_PATH = PROGRAMS + ["sockscope_tcp_close", "sockscope_tcp_reset_in", "sockscope_tcp_reset_out",
                        "sockscope_dns_egress", "sockscope_dns_ingress",
                        "sockscope_drop", "sockscope_drop_v1"]
# Any other program the agent reports (e.g. an iterator it runs at each drain) is agent-side: its
# time is the agent's CPU, not the packet path's; it is listed, but not summed per connection.
# Fallback when bpftool cannot list the cgroup's programs: bpftool program type -> agent name.
TYPE_PROGRAM = {"cgroup_sock": "cgroup_sock (sock_create + sock_release)", "sock_ops": "sockscope_sockops",
                "cgroup_skb": "cgroup_skb (egress + ingress)"}

LIVE = []  # long-lived processes outside the measured cgroup (agent, empty hooks, unbound)
WARNINGS = []


class LoadError(Exception):
    pass


def warn(msg):
    WARNINGS.append(msg)
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def sh(cmd, check=True, timeout=60):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True, timeout=timeout)


def cgroup2():
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        if right.startswith("cgroup2 "):
            return left.split()[4]
    sys.exit("no cgroup2 mount")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def kill(p, grace=0.0):
    """Ends p (our own child, by its pid): waits up to grace seconds for it to exit by itself."""
    if p is None:
        return
    if p.poll() is None and grace:
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    for f in (p.stdout, p.stderr):
        if f:
            try:
                f.close()
            except OSError:
                pass


def read_line(p, timeout, what):
    """One line of p's stdout (a text pipe), within timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LoadError(f"{what}: no output within {timeout}s")
        ready, _, _ = select.select([p.stdout], [], [], left)
        if ready:
            line = p.stdout.readline()
            if not line:
                p.poll()
                raise LoadError(f"{what}: exited (status {p.returncode}) before saying anything")
            return line.strip()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Setup:
    def __init__(self):
        self.cg = os.path.join(cgroup2(), f"sockscope-bench-{os.getpid()}")
        self.a, self.b = f"{TAG}a", f"{TAG}b"
        self.procs = []

    def create(self):
        os.makedirs(os.path.join(self.cg, "load"), exist_ok=True)
        sh(f"ip netns add {self.a}; ip netns add {self.b}; "
           f"ip link add {TAG}x type veth peer name {TAG}y; "
           f"ip link set {TAG}x netns {self.a}; ip link set {TAG}y netns {self.b}; "
           f"ip -n {self.a} link set lo up; ip -n {self.b} link set lo up; "
           f"ip -n {self.a} addr add 10.252.0.1/24 dev {TAG}x; ip -n {self.b} addr add 10.252.0.2/24 dev {TAG}y; "
           f"ip -n {self.a} link set {TAG}x up; ip -n {self.b} link set {TAG}y up")

    def spawn(self, cmd, **kw):
        """cmd in the measured cgroup (the shell moves itself there, then execs cmd)."""
        procs = os.path.join(self.cg, "load", "cgroup.procs")
        p = subprocess.Popen(f"echo $$ > {procs}; exec {cmd}", shell=True, **kw)
        self.procs = [q for q in self.procs if q.poll() is None] + [p]
        return p

    def run(self, cmd, timeout, stderr=subprocess.DEVNULL):
        """Runs a client in the measured cgroup; returns (status, stdout). Killed on timeout."""
        p = self.spawn(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(p)
            raise LoadError(f"timed out after {timeout}s: {cmd}")
        finally:
            kill(p)
        return p.returncode, out

    def close(self):
        for p in self.procs:
            kill(p)
        try:
            open(os.path.join(self.cg, "cgroup.kill"), "w").write("1")
        except OSError:
            pass
        for d in (os.path.join(self.cg, "load"), self.cg):
            for _ in range(30):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        sh(f"ip netns del {self.a}; ip netns del {self.b}", check=False)


# --- What is attached -------------------------------------------------------------------------

def bpftool(*args):
    r = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"bpftool {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return json.loads(r.stdout.strip() or "[]")  # `cgroup show` prints nothing for no programs


class _ProgQuery(ctypes.Structure):
    # The head of union bpf_attr for BPF_PROG_QUERY (the kernel zero-fills the rest).
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32), ("query_flags", ctypes.c_uint32),
                ("attach_flags", ctypes.c_uint32), ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


BPF_PROG_QUERY = 16
CGROUP_ATTACH_TYPES = {0: "ingress", 1: "egress", 2: "sock_create", 3: "sock_ops", 34: "sock_release"}
NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "s390x": 351, "ppc64le": 361}.get(os.uname().machine)


def cgroup_prog_ids(cg):
    """[(attach type, program id)] attached to cg itself, by BPF_PROG_QUERY for the five hooks
    sockscope uses: exact attach types, whatever bpftool's version calls them."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY)
    out = []
    try:
        for t, name in CGROUP_ATTACH_TYPES.items():
            ids = (ctypes.c_uint32 * 64)()
            q = _ProgQuery(target_fd=fd, attach_type=t, prog_ids=ctypes.addressof(ids), prog_cnt=64)
            if libc.syscall(NR_BPF, BPF_PROG_QUERY, ctypes.byref(q), ctypes.sizeof(q)) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"BPF_PROG_QUERY {name}: {os.strerror(err)}")
            out += [(name, ids[i]) for i in range(min(q.prog_cnt, 64))]
    finally:
        os.close(fd)
    return out


def cgroup_hooks(cg, progs=None):
    """[(attach type, program id, program name)] attached to cg itself."""
    try:
        if NR_BPF is None:
            raise OSError("no bpf syscall number for this machine")
        ids = cgroup_prog_ids(cg)
    except OSError:
        return [(str(h.get("attach_type")), h.get("id"), h.get("name", "")) for h in bpftool("cgroup", "show", cg)]
    if not ids:
        return []
    if progs is None:
        progs = {p.get("id"): p for p in bpftool("prog", "show")}
    return [(t, i, progs.get(i, {}).get("name", "")) for t, i in ids]


def hook_names(hooks):
    return sorted(HOOK_PROGRAM.get(t, t) for t, _, _ in hooks)


class Nothing:
    """The `without` variant: checks that nothing is left attached."""

    def __init__(self, cg):
        hooks = []
        for _ in range(2):  # a second look after a moment: detaching may lag the exit
            try:
                hooks = cgroup_hooks(cg)
            except Exception as e:  # noqa: BLE001 - bpftool missing or failing: the check only
                warn(f"could not list the cgroup's programs: {e}")
                return
            if not hooks:
                return
            time.sleep(1)
        warn(f"`without` run with programs still attached: {hooks}")

    def alive(self):
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def terminate(p, what):
    """SIGTERM, up to 20 s to exit, then kill; forgets the process."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            warn(f"{what} did not stop within 20s of SIGTERM; killed")
    kill(p)
    if p in LIVE:
        LIVE.remove(p)


class Agent:
    peak_rss = 0.0

    def __init__(self, cg):
        self.port = free_port()
        self.log = f"/tmp/sockscope-bench-agent-{os.getpid()}.log"
        with open(self.log, "w") as log:
            self.p = subprocess.Popen([AGENT[0], "--cgroup-root", cg,
                                       "--listen-address", f"127.0.0.1:{self.port}", "--interval", "1s"],
                                      stdout=subprocess.DEVNULL, stderr=log)
        LIVE.append(self.p)
        deadline = time.monotonic() + 60
        while True:
            if self.p.poll() is not None:
                raise RuntimeError(f"agent exited (status {self.p.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"agent not ready within 60s: {self.log_tail()}")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        self.t0 = time.monotonic()
        self.cpu0 = self.cpu()

    def log_tail(self):
        try:
            return " | ".join(open(self.log).read().strip().splitlines()[-5:])
        except OSError:
            return ""

    def alive(self):
        return self.p.poll() is None

    def cpu(self):
        # Sum of every thread's on-CPU time in ns (schedstat is precise; /proc/pid/stat ticks are 10ms).
        total = 0
        for t in os.listdir(f"/proc/{self.p.pid}/task"):
            try:
                total += int(open(f"/proc/{self.p.pid}/task/{t}/schedstat").read().split()[0])
            except OSError:
                pass
        return total / 1e9

    def rss_peak_mb(self):
        try:
            for line in open(f"/proc/{self.p.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def metrics(self):
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()

    def prog_totals(self):
        """{program: [run ns, runs]} since the programs were loaded, from the agent's /metrics."""
        out = {}
        for line in self.metrics().splitlines():
            m = re.match(r'sockscope_bpf_program_(run_seconds|runs)_total\{([^}]*)\}\s+(\S+)', line)
            prog = m and re.search(r'program="([^"]+)"', m.group(2))
            if not prog:
                continue
            tot = out.setdefault(prog.group(1), [0.0, 0])
            if m.group(1) == "run_seconds":
                tot[0] += float(m.group(3)) * 1e9
            else:
                tot[1] += int(float(m.group(3)))
        return out

    def stop(self):
        if self.p.poll() is None:
            Agent.peak_rss = max(Agent.peak_rss, self.rss_peak_mb())
        terminate(self.p, "agent")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class EmptyHooks:
    """`sockscope-peer empty-hooks CGROUP`: prints `ready` once attached, runs until SIGTERM."""

    def __init__(self, cg):
        self.cg = cg
        self.p = subprocess.Popen([PEER, "empty-hooks", cg], stdout=subprocess.PIPE, text=True)
        LIVE.append(self.p)
        try:
            line = read_line(self.p, 60, "sockscope-peer empty-hooks")
            if line != "ready":
                raise LoadError(f"sockscope-peer empty-hooks said {line!r}, not 'ready'")
        except Exception:
            self.stop()
            raise
        self.warned = False

    def alive(self):
        return self.p.poll() is None

    def prog_totals(self):
        """{agent program name of the same hook: [run ns, runs]}, from bpftool (run_time_ns and
        run_cnt appear once bpf_stats_enabled=1 has counted something)."""
        progs = {p.get("id"): p for p in bpftool("prog", "show")}
        out = {}
        attached = cgroup_hooks(self.cg, progs)
        hooks = [h for h in attached if h[2].startswith(EMPTY_PREFIX)]
        if attached and not hooks:
            hooks = attached
            if not self.warned:
                warn(f"empty hooks: no program named {EMPTY_PREFIX}* at the cgroup; counting all of {attached}")
                self.warned = True
        if hooks:
            for attach_type, pid, _ in hooks:
                p = progs.get(pid, {})
                tot = out.setdefault(HOOK_PROGRAM.get(attach_type, f"empty {attach_type}"), [0.0, 0])
                tot[0] += p.get("run_time_ns", 0)
                tot[1] += p.get("run_cnt", 0)
            return out
        # No cgroup listing: programs by name prefix (and our pid where bpftool shows pids).
        if not self.warned:
            warn("empty hooks: no programs listed at the cgroup; matching programs by name instead")
            self.warned = True
        for p in progs.values():
            pids = [q.get("pid") for q in p.get("pids", [])]
            if not p.get("name", "").startswith(EMPTY_PREFIX) or (pids and self.p.pid not in pids):
                continue
            t = p.get("type", "")
            tot = out.setdefault(TYPE_PROGRAM.get(t, f"empty {t}"), [0.0, 0])
            tot[0] += p.get("run_time_ns", 0)
            tot[1] += p.get("run_cnt", 0)
        return out

    def stop(self):
        terminate(self.p, "empty-hooks")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def attach(variant, cg):
    return {"without": Nothing, "empty": EmptyHooks, "with": Agent}[variant](cg)


# --- Loads ------------------------------------------------------------------------------------

def iperf(setup, veth, seconds, extra=""):
    """One iperf3 test (client and server in the measured cgroup); returns the JSON's "end"."""
    ns_s = f"ip netns exec {setup.b} " if veth else ""
    ns_c = f"ip netns exec {setup.a} " if veth else ""
    host = "10.252.0.2" if veth else "127.0.0.1"
    for _ in range(3):
        port = free_port()
        srv = setup.spawn(f"{ns_s}iperf3 -s -1 -p {port}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = False
        try:
            # The server may take a moment to listen: retry a refused client.
            for _ in range(20):
                time.sleep(0.2)
                if srv.poll() is not None:
                    break  # the server gave up (port taken, or a failed test): a new one
                status, out = setup.run(f"{ns_c}iperf3 -c {host} -p {port} -t {seconds} {extra} -J", timeout=seconds + 30)
                if status == 0:
                    ok = True
                    return json.loads(out)["end"]
        finally:
            kill(srv, grace=5 if ok else 0)  # -1: the server exits after its one test
    raise LoadError(f"iperf3 client could not run ({'veth' if veth else 'loopback'} {extra})")


def tcp_gbps(end):
    return end["sum_received"]["bits_per_second"] / 1e9


def udp_pps(end):
    """Datagrams received per second. iperf3 3.12 reports the receiver's side in sum_received
    (packets = highest sequence seen, lost_packets = the gaps); older versions only in sum."""
    for key in ("sum_received", "sum"):
        s = end.get(key)
        if s and "packets" in s and s.get("seconds"):
            return (s["packets"] - s.get("lost_packets", 0)) / s["seconds"]
    raise LoadError("iperf3 UDP result without packet counts")


class HttpServer:
    """`sockscope-peer http-server 127.0.0.1:0 THREADS` in the measured cgroup."""

    def __init__(self, setup, threads=HTTP_THREADS):
        self.p = setup.spawn(f"{PEER} http-server 127.0.0.1:0 {threads}", stdout=subprocess.PIPE, text=True)
        try:
            line = read_line(self.p, 30, "http-server")
            m = re.match(r"ready (\d+)", line)
            if not m:
                raise LoadError(f"http-server said {line!r}")
            self.port = int(m.group(1))
        except Exception:
            kill(self.p)
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        kill(self.p)
        return False


def wrk(setup, port, seconds, conns, close, latency=False):
    hdr = "-H 'Connection: close' " if close else ""
    lat = "--latency " if latency else ""
    status, out = setup.run(f"wrk -t2 -c{conns} -d{seconds}s {lat}{hdr}http://127.0.0.1:{port}/", timeout=seconds + 30)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if status != 0 or not rps:
        raise LoadError(f"wrk failed (status {status}): {out.strip()[-300:]}")
    r = {"rps": float(rps.group(1))}
    n = re.search(r"(\d+) requests in", out)
    r["requests"] = int(n.group(1)) if n else 0
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in errs.groups()) if errs else 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    if r["socket_errors"] or r["non_2xx"]:
        warn(f"wrk: {r['socket_errors']} socket errors, {r['non_2xx']} non-2xx responses of {r['requests']}")
    if latency:
        p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        if not p99:
            raise LoadError("wrk --latency without a 99% line")
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}[p99.group(2)]
        r["p99_ms"] = float(p99.group(1)) * scale
    return r


def tcp_active_opens():
    """Connections this network namespace (the root one: loopback) opened, from /proc/net/snmp."""
    rows = [line.split() for line in open("/proc/net/snmp") if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def churn(setup, seconds):
    with HttpServer(setup) as srv:
        return wrk(setup, srv.port, seconds, 32, close=True)


def keepalive(setup, seconds):
    with HttpServer(setup) as srv:
        opens = tcp_active_opens()
        r = wrk(setup, srv.port, seconds, KEEPALIVE_CONNS, close=False, latency=True)
        r["connections"] = tcp_active_opens() - opens
    if r["connections"] > max(100, r["requests"] // 10):
        warn(f"keep-alive: {r['connections']} connections for {r['requests']} requests: "
             "http-server closes its connections, so this row measures churn")
    return r


class Unbound:
    """unbound in the server namespace, outside the measured cgroup: only the client's side is
    what sockscope counts, as on a node whose resolver runs elsewhere."""

    def __init__(self, setup):
        self.dir = f"/tmp/sockscope-bench-dns-{os.getpid()}"
        os.makedirs(self.dir, exist_ok=True)
        zone = "$ORIGIN bench.test.\n$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 300\n@ IN NS ns\nns IN A 10.252.0.2\n"
        zone += "".join(f"{n.split('.')[0]} IN A 10.252.0.{10 + i}\n" for i, n in enumerate(DNS_NAMES))
        open(f"{self.dir}/zone", "w").write(zone)
        open(f"{self.dir}/unbound.conf", "w").write(f"""server:
  interface: 10.252.0.2
  interface: 10.252.0.2@5353
  port: 53
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{self.dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 0.0.0.0/0 allow
  module-config: "iterator"
  num-threads: 1
  local-zone: "test." nodefault
auth-zone:
  name: "bench.test."
  zonefile: "{self.dir}/zone"
  for-downstream: yes
  for-upstream: no
remote-control:
  control-enable: no
""")
        self.queries = f"{self.dir}/queries"
        open(self.queries, "w").write("".join(f"{n} A\n" for n in DNS_NAMES))
        self.p = subprocess.Popen(["ip", "netns", "exec", setup.b, "unbound", "-d", "-c", f"{self.dir}/unbound.conf"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        LIVE.append(self.p)
        for _ in range(100):
            if "NOERROR" in sh(f"ip netns exec {setup.a} kdig +retry=0 +timeout=1 @10.252.0.2 ns.bench.test A", check=False).stdout:
                return
            time.sleep(0.1)
        self.close()
        raise RuntimeError("unbound did not start")

    def close(self):
        kill(self.p)
        if self.p in LIVE:
            LIVE.remove(self.p)
        sh(f"rm -rf {self.dir}", check=False)


def dnsperf(setup, unbound, seconds, rate=None, port=53, mode="udp"):
    """Maximum rate (2 sockets, up to 200 queries in flight), or a fixed rate; over UDP or TCP.
    Returns (queries/s, sent, lost)."""
    limit = f" -Q {rate}" if rate else ""
    _, out = setup.run(f"ip netns exec {setup.a} dnsperf -m {mode} -s 10.252.0.2 -p {port} -d {unbound.queries} "
                       f"-l {seconds} -c 2 -q 200{limit}", timeout=seconds + 30)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    sent = re.search(r"Queries sent:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if not qps:
        raise LoadError(f"dnsperf printed no rate: {out.strip()[-300:]}")
    return float(qps.group(1)), int(sent.group(1)) if sent else 0, int(lost.group(1)) if lost else 0


def run_load(key, setup, unbound, seconds):
    """One throughput measure: {row: value}."""
    if key == "veth1":
        return {"veth1": tcp_gbps(iperf(setup, True, seconds))}
    if key == "veth4":
        return {"veth4": tcp_gbps(iperf(setup, True, seconds, "-P 4"))}
    if key == "loopback":
        return {"loopback": tcp_gbps(iperf(setup, False, seconds))}
    if key == "udp64":
        return {"udp64": udp_pps(iperf(setup, True, seconds, f"-u -l {UDP_LEN} -b 0"))}
    if key == "churn":
        return {"churn": churn(setup, seconds)["rps"]}
    if key == "keepalive":
        r = keepalive(setup, seconds)
        return {"keepalive": r["rps"], "keepalive_p99": r["p99_ms"]}
    if key == "dns":
        return {"dns": dnsperf(setup, unbound, seconds)[0]}
    raise ValueError(key)


# --- Stats passes -----------------------------------------------------------------------------

def stats_pass(name, setup, unbound, seconds):
    """One load at a rate fit for run-time stats; returns what it did (connections for churn)."""
    if name == "veth1":
        return {"gbps": tcp_gbps(iperf(setup, True, seconds))}
    if name == "churn":
        r = churn(setup, seconds)
        return {"connections": r["requests"], "rps": r["rps"]}
    if name == "udp":
        return {"pps": udp_pps(iperf(setup, True, seconds, f"-u -l {UDP_LEN} -b {UDP_STATS_PPS * UDP_LEN * 8}"))}
    if name in ("dns53", "dns5353"):
        qps, sent, lost = dnsperf(setup, unbound, seconds, rate=DNS_STATS_RATE, port=int(name[3:]))
        return {"qps": qps, "sent": sent, "lost": lost}
    if name == "dnstcp":
        qps, sent, lost = dnsperf(setup, unbound, seconds, rate=DNS_TCP_STATS_RATE, mode="tcp")
        return {"qps": qps, "sent": sent, "lost": lost}
    if name == "resets":
        # The other namespace's kernel answers each SYN to a closed port with a reset (sent
        # without a socket); the client's socket receives it.
        code = (f"import socket\nfor _ in range({RESETS}):\n s = socket.socket()\n"
                f" try:\n  s.connect(('10.252.0.2', 9))\n except OSError:\n  pass\n s.close()\n")
        setup.run(f"ip netns exec {setup.a} python3 -c {shlex.quote(code)}", timeout=300)
        return {"connects": RESETS}
    if name == "drops":
        nft = (f"table inet {TAG} {{\n  chain out {{\n    type filter hook output priority 0;\n"
               f"    udp dport {DROP_PORT} drop\n  }}\n}}\n")
        subprocess.run(["ip", "netns", "exec", setup.a, "nft", "-f", "-"], input=nft, text=True, check=True)
        try:
            code = (f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                    f"for _ in range({DROPS}):\n try:\n  s.sendto(b'x' * 64, ('10.252.0.2', {DROP_PORT}))\n"
                    f" except OSError:\n  pass\n")
            setup.run(f"ip netns exec {setup.a} python3 -c {shlex.quote(code)}", timeout=300)
        finally:
            sh(f"ip netns exec {setup.a} nft delete table inet {TAG}", check=False)
        return {"datagrams": DROPS}
    raise ValueError(name)


def stats_passes(variant, passes, setup, unbound, seconds):
    """{pass: {"programs": {program: [run ns, runs] during the pass}, "load": ...}}."""
    out = {}
    with attach(variant, setup.cg) as att:
        time.sleep(DRAIN_WAIT)
        before = att.prog_totals()
        for name in passes:
            try:
                info = stats_pass(name, setup, unbound, seconds)
            except Exception as e:  # noqa: BLE001 - one failed pass must not lose the others
                warn(f"stats pass {name} ({variant}) failed: {e}")
                info = None
            time.sleep(DRAIN_WAIT)
            try:
                after = att.prog_totals()
            except Exception as e:  # noqa: BLE001
                warn(f"stats pass {name}: could not read the {variant} variant's program stats: {e}")
                break
            delta = {p: [v[0] - before.get(p, [0, 0])[0], v[1] - before.get(p, [0, 0])[1]] for p, v in after.items()}
            before = after
            if not att.alive():
                warn(f"stats pass {name}: the {variant} variant died")
                break
            if info is not None:
                out[name] = {"programs": delta, "load": info}
    return out


def combine(passes, names):
    tot = {}
    for n in names:
        for p, (ns, runs) in passes.get(n, {}).get("programs", {}).items():
            t = tot.setdefault(p, [0.0, 0])
            t[0] += ns
            t[1] += runs
    return tot


def ordered(progs):
    return [p for p in PROGRAMS if p in progs] + sorted(p for p in progs if p not in PROGRAMS)


def per_run(t):
    return t[0] / t[1] if t and t[1] else None


# --- Output -----------------------------------------------------------------------------------

def num(x):
    if x is None:
        return "-"
    ax = abs(x)
    return f"{x:.0f}" if ax >= 1000 else f"{x:.1f}" if ax >= 100 else f"{x:.2f}" if ax >= 1 else f"{x:.3f}"


def span(xs, f=num):
    xs = [x for x in xs if x is not None]
    return f"{f(min(xs))}..{f(max(xs))}" if xs else "-"


def pct(x):
    return "-" if x is None else f"{x * 100:.1f}%"


def pct_span(xs):
    sp = span(xs, lambda x: f"{x * 100:.1f}")
    return sp if sp == "-" else sp + "%"


def summarize(vals):
    """vals: {variant: [value per rep or None]} -> medians, per-rep paired ratios, spreads."""
    s = {"values": vals, "median": {v: median(vals[v]) for v in VARIANTS}, "min": {}, "max": {},
         "per_rep_ratio": {}, "ratio_median": {}, "ratio_of_medians": {}}
    for v in VARIANTS:
        xs = [x for x in vals[v] if x is not None]
        s["min"][v], s["max"][v] = (min(xs), max(xs)) if xs else (None, None)
    for v in ("empty", "with"):
        rs = [(x / w if w else None) if x is not None and w is not None else None
              for x, w in zip(vals[v], vals["without"])]
        s["per_rep_ratio"][v] = rs
        s["ratio_median"][v] = median(rs)
        a, b = s["median"]["without"], s["median"][v]
        s["ratio_of_medians"][v] = b / a if a and b is not None else None
    return s


def print_table(rows, reps, seconds, orders):
    print(f"\nsockscope benchmark: {reps} interleaved reps x {seconds}s, {os.cpu_count()} CPUs, kernel {os.uname().release}")
    print("variants: without = nothing attached; empty = the same hooks, empty programs; with = sockscope")
    print("rep orders: " + "; ".join(",".join(o) for o in orders))
    w = 38
    print(f"\n{'measure (unit)':{w}} {'without':>17} {'empty':>17} {'with':>17} {'empty/without':>15} {'with/without':>15}")
    for key, s in rows.items():
        label, unit, lower = ROWS[key]
        name = f"{label} ({unit}){' *' if lower else ''}"
        m, r = s["median"], s["ratio_median"]
        print(f"{name:{w}} {num(m['without']):>17} {num(m['empty']):>17} {num(m['with']):>17} "
              f"{pct(r['empty']):>15} {pct(r['with']):>15}")
        print(f"{'  min..max':{w}} " + " ".join(f"{span(s['values'][v]):>17}" for v in VARIANTS) + " "
              + " ".join(f"{pct_span(s['per_rep_ratio'][v]):>15}" for v in ("empty", "with")))
    print("medians of each variant; ratios: median of the per-rep ratios (each rep pairs its own runs);"
          "\nsecond line: min..max over the reps. * lower is better (ratios above 100% are worse).")


def print_stats(stats):
    agent, empty = stats.get("with", {}), stats.get("empty", {})
    groups = [
        ("TCP: veth1 + churn", ["veth1", "churn"]),
        # Apart, because they differ by an order of magnitude in what a packet costs: bulk
        # transfer is data segments and their ACKs (the fast path), churn is mostly handshake
        # and FIN segments (the full path).
        ("TCP data segments: veth1 alone (bulk transfer, one stream)", ["veth1"]),
        ("TCP handshakes and FINs: churn alone (one connection per request)", ["churn"]),
        (f"UDP: udp64 at ~{UDP_STATS_PPS // 1000}k packets/s", ["udp"]),
        (f"DNS: dnsperf at {DNS_STATS_RATE} queries/s to port 53 (every invocation a DNS packet)", ["dns53"]),
        ("DNS: the same packets to port 5353 (UDP byte accounting alone, no DNS parsing)", ["dns5353"]),
        (f"DNS over TCP: dnsperf -m tcp at {DNS_TCP_STATS_RATE} queries/s (the parser runs as a tail call of the"
         " packet programs and its time counts in theirs)", ["dnstcp"]),
        (f"resets: {RESETS} connects to a closed port (one reset received each; tracepoints fire for every"
         " reset on the node)", ["resets"]),
        (f"drops: {DROPS} UDP datagrams dropped by an nftables output rule (kfree_skb fires only on drops)",
         ["drops"]),
    ]
    out = {}
    print("\nkernel ns per program invocation (bpf stats on; deltas over each pass):")
    for title, names in groups:
        a, e = combine(agent, names), combine(empty, names)
        if not a and not e:
            continue
        out[title] = {"with": {p: {"ns_per_run": per_run(t), "runs": t[1]} for p, t in a.items()},
                      "empty": {p: {"ns_per_run": per_run(t), "runs": t[1]} for p, t in e.items()}}
        print(f"  {title}")
        print(f"    {'program':30} {'sockscope ns':>12} {'runs':>11}   {'empty ns':>9} {'runs':>11}")
        for p in ordered(set(a) | set(e)):
            name = p if p in DATA_PATH else f"{p} (agent-side)"
            print(f"    {name:30} {num(per_run(a.get(p))):>12} {a.get(p, [0, 0])[1]:>11}   "
                  f"{num(per_run(e.get(p))):>9} {e.get(p, [0, 0])[1]:>11}")
    a53, a5353 = combine(agent, ["dns53"]), combine(agent, ["dns5353"])
    for p in ("sockscope_egress", "sockscope_ingress"):
        v, base = per_run(a53.get(p)), per_run(a5353.get(p))
        if v is not None and base is not None:
            print(f"  DNS adds {v - base:.1f} ns per {p} invocation ({v:.1f} ns at port 53, {base:.1f} ns at 5353)")
    return out


def print_per_connection(stats):
    """Per TCP connection of the churn pass: both its ends are in the measured cgroup."""
    out = {}
    for variant, title in (("with", "sockscope"), ("empty", "empty hooks")):
        churn_pass = stats.get(variant, {}).get("churn")
        if not churn_pass or not churn_pass["load"].get("connections"):
            continue
        conns = churn_pass["load"]["connections"]
        progs = churn_pass["programs"]
        if not out:
            print("\nper TCP connection (both ends in the measured cgroup; churn stats pass, wrk requests = connections):")
        print(f"  {title}: {conns} connections")
        print(f"    {'program':30} {'runs/conn':>10} {'ns/run':>9} {'ns/conn':>10}")
        rows, total, other = {}, 0.0, 0.0
        for p in ordered(progs):
            t = progs[p]
            rpc, ns, npc = t[1] / conns, per_run(t), t[0] / conns
            rows[p] = {"runs_per_conn": rpc, "ns_per_run": ns, "ns_per_conn": npc, "hook": p in DATA_PATH}
            if p in DATA_PATH:
                total += npc
            else:
                other += npc
            if p in DATA_PATH or t[1]:
                print(f"    {p:30} {rpc:>10.2f} {num(ns):>9} {npc:>10.1f}{'' if p in DATA_PATH else '   (agent-side, at drains)'}")
        print(f"    {'on the connection':30} {'':>10} {'':>9} {total:>10.1f}")
        so = rows.get("sockscope_sockops")
        if so:
            print(f"    sock_ops: {so['runs_per_conn']:.2f} callbacks per connection (both ends) x {num(so['ns_per_run'])} ns "
                  f"= {so['ns_per_conn']:.1f} ns per connection")
        out[variant] = {"connections": conns, "programs": rows, "ns_per_conn": total, "ns_per_conn_agent_side": other}
    return out


# --- Phases -----------------------------------------------------------------------------------

def agent_cpu_phase(setup, seconds):
    """The agent's CPU, idle and at CPU_RATE new connections/s, over windows of equal length."""
    window = seconds + DRAIN_WAIT
    with Agent(setup.cg) as agent, HttpServer(setup) as srv:
        time.sleep(1.5)
        c0 = agent.cpu()
        time.sleep(window)
        idle = agent.cpu() - c0
        c0, t0 = agent.cpu(), time.monotonic()
        status, out = setup.run(f"{PEER} connect-rate 127.0.0.1:{srv.port} {CPU_RATE} {seconds}", timeout=seconds + 30,
                                stderr=None)
        if status != 0:
            warn(f"connect-rate exited with status {status}")
        left = window - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)  # the last events' drain
        wall = time.monotonic() - t0
        busy = agent.cpu() - c0
        if not agent.alive():
            raise RuntimeError("agent died during the connection load")
    m = re.search(r"connections (\d+)", out)
    conns = int(m.group(1)) if m else None
    if conns is None:
        warn(f"connect-rate printed no `connections N`: {out.strip()[-200:]}")
    return {"seconds": seconds, "target_rate": CPU_RATE, "connections": conns,
            "rate": conns / seconds if conns is not None else None,
            "idle_cpu_s": idle, "idle_window_s": window, "idle_pct": idle / window * 100,
            "load_cpu_s": busy, "load_window_s": wall, "load_pct": busy / wall * 100}


def dns_check_phase(setup, unbound, seconds):
    """At the maximum rate, bpf stats on: exact counts, forwarding and drops."""
    with Agent(setup.cg) as agent:
        qps, sent, lost = dnsperf(setup, unbound, seconds)
        time.sleep(2.5)  # drains, and the answer sweep for queries dnsperf gave up on
        text = agent.metrics()
    return {
        "qps": qps, "sent": sent, "lost": lost,
        "counted": metric_sum(text, "sockscope_dns_queries_total{"),
        "responses": metric_sum(text, "sockscope_dns_responses_total{"),
        "ringbuf_drops": metric_sum(text, "sockscope_events_lost_total{", 'source="dns_ringbuf"'),
        "forwarded": metric_sum(text, "sockscope_dns_answers_total{"),
        "map_full": metric_sum(text, "sockscope_events_folded_total{", 'source="dns_map_full"')
        + metric_sum(text, "sockscope_events_folded_total{", 'source="dns_cgroup_limit"')
        + metric_sum(text, "sockscope_events_lost_total{", 'source="dns_pending_evicted"'),
    }


def metric_sum(text, name, label_filter=""):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label_filter in line:
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


# The agent binary measured (--agent).
AGENT = [os.path.join(BIN, "sockscope")]


def main():
    ap = argparse.ArgumentParser(description="sockscope overhead benchmark (root)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=4, help="length of every load run")
    ap.add_argument("--only", default=",".join(LOADS),
                    help=f"comma-separated loads: {', '.join(LOADS)} (iperf3 = {','.join(ALIASES['iperf3'])})")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: throughput, cpu, stats, dnscheck")
    ap.add_argument("--cpu-seconds", type=int, default=10, help=f"length of the agent CPU measure at {CPU_RATE} conn/s")
    ap.add_argument("--json", metavar="PATH", help="also write the JSON results to PATH")
    ap.add_argument("--agent", metavar="PATH", default=os.path.join(BIN, "sockscope"),
                    help="the sockscope binary to measure (e.g. an older build, for before/after)")
    args = ap.parse_args()
    AGENT[0] = args.agent
    only = []
    for k in filter(None, args.only.split(",")):
        for k2 in ALIASES.get(k, [k]):
            if k2 not in LOADS:
                ap.error(f"unknown load {k2!r} (known: {', '.join(LOADS)})")
            if k2 not in only:
                only.append(k2)
    skip = set(filter(None, args.skip.split(",")))
    if skip - {"throughput", "cpu", "stats", "dnscheck"}:
        ap.error(f"unknown phase(s) to skip: {', '.join(sorted(skip - {'throughput', 'cpu', 'stats', 'dnscheck'}))}")
    if os.geteuid() != 0:
        sys.exit("run as root")
    for b in ("sockscope", "sockscope-peer"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            sys.exit(f"{os.path.join(BIN, b)} missing: cargo build --release --bins")
    # SIGTERM/SIGHUP unwind through the finally blocks below, as Ctrl-C does.
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda signum, _frame: sys.exit(128 + signum))

    row_keys = [r for k in only for r in LOADS[k]]
    values = {r: {v: [None] * args.reps for v in VARIANTS} for r in row_keys}
    orders, errors, hooks = [], [], {}
    stats, cpu_phase, dns_check = {}, None, None
    with_cpu, with_wall = 0.0, 0.0
    unavailable = set()
    started = time.monotonic()

    def phase(name, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - report it, and go on with the next phase
            traceback.print_exc()
            errors.append(f"{name}: {e}")
            return None

    old_stats = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    setup, unbound = Setup(), None
    try:
        setup.create()
        if "dns" in only:
            unbound = Unbound(setup)
        # Throughput runs with run-time stats off: stats add two clock reads per invocation.
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write("0")
        if "throughput" not in skip:
            for rep in range(args.reps):
                k = rep % len(VARIANTS)
                order = VARIANTS[k:] + VARIANTS[:k]
                orders.append(order)
                for v in order:
                    if v in unavailable:
                        continue
                    try:
                        att = attach(v, setup.cg)
                    except Exception as e:  # noqa: BLE001 - go on without this variant
                        warn(f"variant {v} could not attach ({e}); left out from here on")
                        errors.append(f"attach {v}: {e}")
                        unavailable.add(v)
                        continue
                    with att:
                        if v != "without" and v not in hooks:
                            try:
                                hooks[v] = hook_names(cgroup_hooks(setup.cg))
                            except Exception as e:  # noqa: BLE001
                                warn(f"could not list the {v} hooks: {e}")
                        time.sleep(0.5)
                        for key in only:
                            try:
                                res = run_load(key, setup, unbound, args.seconds)
                            except Exception as e:  # noqa: BLE001 - one failed run must not end the benchmark
                                warn(f"rep {rep + 1} {v} {key}: {e}")
                                continue
                            if not att.alive():
                                warn(f"rep {rep + 1} {v}: the variant's process died during {key}; "
                                     "its runs are dropped from this rep")
                                break
                            for r, x in res.items():
                                values[r][v][rep] = x
                            print(f"rep {rep + 1} {v:7} {key:9} " + " ".join(f"{r}={num(x)}" for r, x in res.items()),
                                  file=sys.stderr, flush=True)
                        if v == "with" and att.alive():
                            with_cpu += att.cpu() - att.cpu0
                            with_wall += time.monotonic() - att.t0
                print(f"rep {rep + 1}/{args.reps} done ({time.monotonic() - started:.0f}s)", file=sys.stderr, flush=True)
            if hooks.get("empty") and hooks.get("with") and hooks["empty"] != hooks["with"]:
                warn(f"empty hooks attach {hooks['empty']}, sockscope {hooks['with']}: not the same hooks")

        if "cpu" not in skip:
            cpu_phase = phase("agent CPU", lambda: agent_cpu_phase(setup, args.cpu_seconds))

        if "stats" not in skip or ("dnscheck" not in skip and "dns" in only):
            open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
        if "stats" not in skip:
            passes = ([p for p in ("veth1", "churn") if p in only] + (["udp"] if "udp64" in only else [])
                      + (["dns53", "dns5353", "dnstcp"] if "dns" in only else [])
                      + (["resets", "drops"] if "churn" in only else []))
            if passes:
                for v in ("with", "empty"):
                    # Port 5353 is the agent's UDP-only baseline; the empty programs parse nothing.
                    # The tracepoints have no empty counterpart.
                    ps = [p for p in passes if v == "with" or p not in ("dns5353", "resets", "drops")]
                    r = phase(f"stats passes ({v})", lambda v=v, ps=ps: stats_passes(v, ps, setup, unbound, args.seconds))
                    if r is not None:
                        stats[v] = r
        if "dnscheck" not in skip and "dns" in only:
            dns_check = phase("DNS check", lambda: dns_check_phase(setup, unbound, args.seconds))
    finally:
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old_stats)
        if unbound:
            unbound.close()
        for p in list(LIVE):  # whatever an exception left running (agent, empty hooks)
            kill(p)
            LIVE.remove(p)
        setup.close()
        try:
            os.unlink(f"/tmp/sockscope-bench-agent-{os.getpid()}.log")
        except OSError:
            pass

    rows = {r: summarize(values[r]) for r in row_keys}
    if "throughput" not in skip:
        print_table(rows, args.reps, args.seconds, orders)
        if hooks:
            print("hooks attached: " + "; ".join(f"{v}: {', '.join(h)}" for v, h in hooks.items()))
    stats_out = print_stats(stats) if stats else {}
    per_conn = print_per_connection(stats) if stats else {}
    if cpu_phase:
        c = cpu_phase
        rate = f"{c['rate']:.0f}" if c["rate"] is not None else "?"
        print(f"\nagent CPU at {CPU_RATE} connections/s (connect-rate, {c['seconds']}s; made {c['connections']}, {rate}/s): "
              f"{c['load_pct']:.2f}% of one core ({c['load_cpu_s']:.3f} s over {c['load_window_s']:.1f} s); "
              f"idle over as long: {c['idle_pct']:.2f}% ({c['idle_cpu_s']:.3f} s)")
    if dns_check:
        d = dns_check
        print(f"\nDNS at the maximum rate, bpf stats on: {d['qps']:.0f} queries/s; dnsperf sent {d['sent']} (lost {d['lost']}), "
              f"sockscope counted {d['counted']:.0f} queries and {d['responses']:.0f} responses")
        print(f"  answers forwarded to userspace: {d['forwarded']:.0f}; ring buffer drops: {d['ringbuf_drops']:.0f}; "
              f"DNS map full/pending evicted: {d['map_full']:.0f}")
    if with_wall:
        print(f"\nagent CPU during the throughput reps: {with_cpu:.3f} s over {with_wall:.0f} s under load "
              f"({with_cpu / with_wall * 100:.3f}% of one core)")
    print(f"agent peak RSS: {Agent.peak_rss:.1f} MB")
    for e in errors:
        print(f"error: {e}")
    if WARNINGS:
        print(f"{len(WARNINGS)} warning(s), listed in the JSON and on stderr")

    blob = {
        "reps": args.reps, "seconds": args.seconds, "cpus": os.cpu_count(), "kernel": os.uname().release,
        "loads": only, "skipped": sorted(skip), "orders": orders, "hooks": hooks,
        "rows": {r: {"label": ROWS[r][0], "unit": ROWS[r][1], "lower_is_better": ROWS[r][2], **s} for r, s in rows.items()},
        "ns_per_invocation": stats_out, "per_connection": per_conn,
        "stats_passes": stats, "agent_cpu": cpu_phase, "agent_cpu_throughput": {"cpu_s": with_cpu, "wall_s": with_wall},
        "agent_peak_rss_mb": Agent.peak_rss, "dns_check": dns_check,
        "constants": {"udp_stats_pps": UDP_STATS_PPS, "dns_stats_rate": DNS_STATS_RATE, "cpu_rate": CPU_RATE,
                      "keepalive_connections": KEEPALIVE_CONNS, "http_threads": HTTP_THREADS},
        "errors": errors, "warnings": WARNINGS,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(blob, f, indent=2, sort_keys=True)
            f.write("\n")
    print("\n" + json.dumps(blob, sort_keys=True))


if __name__ == "__main__":
    main()
