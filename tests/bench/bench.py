#!/usr/bin/env python3
"""sockscope overhead benchmark (prints figures; not a test).

Measures, with and without sockscope attached to the benchmark's cgroup, in interleaved runs:
  - iperf3 TCP throughput over loopback and over a veth pair between two network namespaces;
  - connection churn: wrk without keep-alive (one TCP connection per request) against a small
    HTTP server;
and, from the runs with sockscope:
  - kernel ns per program invocation (BPF run-time stats, kernel.bpf_stats_enabled=1);
  - the agent's CPU seconds and peak RSS.

Usage (root): python3 tests/bench/bench.py [--reps 5] [--seconds 5]
Run scripts/setup.sh and `cargo build --release --bins` first (bench.sh does both).
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")
TAG = f"ssb{os.getpid() % 10000}"


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


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


class Setup:
    def __init__(self):
        self.cg = os.path.join(cgroup2(), f"sockscope-bench-{os.getpid()}")
        os.makedirs(os.path.join(self.cg, "load"), exist_ok=True)
        self.a, self.b = f"{TAG}a", f"{TAG}b"
        sh(f"ip netns add {self.a}; ip netns add {self.b}; "
           f"ip link add {TAG}x type veth peer name {TAG}y; "
           f"ip link set {TAG}x netns {self.a}; ip link set {TAG}y netns {self.b}; "
           f"ip -n {self.a} link set lo up; ip -n {self.b} link set lo up; "
           f"ip -n {self.a} addr add 10.252.0.1/24 dev {TAG}x; ip -n {self.b} addr add 10.252.0.2/24 dev {TAG}y; "
           f"ip -n {self.a} link set {TAG}x up; ip -n {self.b} link set {TAG}y up")

    def spawn(self, cmd, **kw):
        procs = os.path.join(self.cg, "load", "cgroup.procs")
        return subprocess.Popen(f"echo $$ > {procs}; exec {cmd}", shell=True, **kw)

    def close(self):
        try:
            open(os.path.join(self.cg, "cgroup.kill"), "w").write("1")
        except OSError:
            pass
        time.sleep(0.3)
        for d in (os.path.join(self.cg, "load"), self.cg):
            try:
                os.rmdir(d)
            except OSError:
                pass
        sh(f"ip netns del {self.a}; ip netns del {self.b}", check=False)


class Agent:
    def __init__(self, cg):
        self.port = free_port()
        self.p = subprocess.Popen([os.path.join(BIN, "sockscope"), "--cgroup-root", cg,
                                   "--listen-address", f"127.0.0.1:{self.port}", "--interval", "1s"],
                                  stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        self.cpu0 = self.cpu()

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
        for line in open(f"/proc/{self.p.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def metrics(self):
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=20)


def iperf(setup, veth, seconds):
    port = free_port()
    ns_s = f"ip netns exec {setup.b} " if veth else ""
    ns_c = f"ip netns exec {setup.a} " if veth else ""
    host = "10.252.0.2" if veth else "127.0.0.1"
    srv = setup.spawn(f"{ns_s}iperf3 -s -1 -p {port}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    cli = setup.spawn(f"{ns_c}iperf3 -c {host} -p {port} -t {seconds} -J", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out, _ = cli.communicate(timeout=seconds + 30)
    srv.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def churn(setup, seconds):
    srv = setup.spawn(f"{os.path.join(BIN, 'sockscope-peer')} http-server 127.0.0.1:0 4", stdout=subprocess.PIPE, text=True)
    port = srv.stdout.readline().split()[1]
    cli = setup.spawn(f"wrk -t2 -c32 -d{seconds}s -H 'Connection: close' http://127.0.0.1:{port}/",
                      stdout=subprocess.PIPE, text=True)
    out, _ = cli.communicate(timeout=seconds + 30)
    srv.kill()
    srv.wait()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def run_stats(text):
    secs, runs = {}, {}
    for line in text.splitlines():
        m = re.match(r'sockscope_bpf_program_(run_seconds|runs)_total\{program="([^"]+)"\} ([\d.e+-]+)', line)
        if m:
            (secs if m.group(1) == "run_seconds" else runs)[m.group(2)] = float(m.group(3))
    return {p: (secs[p] / runs[p] * 1e9 if runs.get(p) else 0.0, int(runs.get(p, 0))) for p in secs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    old_stats = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    setup = Setup()
    results = {k: {"without": [], "with": []} for k in ("iperf3 loopback Gbit/s", "iperf3 veth Gbit/s", "churn conn/s")}
    ns, cpu, rss = {}, 0.0, 0.0
    try:
        # Throughput runs with run-time stats off: stats add two clock reads per invocation.
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write("0")
        for rep in range(args.reps):
            for mode in ("without", "with"):
                agent = Agent(setup.cg) if mode == "with" else None
                results["iperf3 loopback Gbit/s"][mode].append(iperf(setup, False, args.seconds))
                results["iperf3 veth Gbit/s"][mode].append(iperf(setup, True, args.seconds))
                results["churn conn/s"][mode].append(churn(setup, args.seconds))
                if agent:
                    cpu += agent.cpu() - agent.cpu0
                    rss = max(rss, agent.rss_peak_mb())
                    agent.stop()
            print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
        # One more pass with stats on, for kernel ns per invocation.
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
        agent = Agent(setup.cg)
        iperf(setup, False, args.seconds)
        iperf(setup, True, args.seconds)
        churn(setup, args.seconds)
        time.sleep(1.2)  # one more drain so run stats are current
        for p, (v, n) in run_stats(agent.metrics()).items():
            ns.setdefault(p, []).append((v, n))
        rss = max(rss, agent.rss_peak_mb())
        agent.stop()
    finally:
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old_stats)
        setup.close()

    print(f"\nsockscope benchmark: {args.reps} interleaved reps x {args.seconds}s, {os.cpu_count()} CPUs, kernel {os.uname().release}")
    print(f"{'measure':28} {'without (median)':>18} {'with (median)':>16} {'ratio':>8}")
    for k, v in results.items():
        a, b = statistics.median(v["without"]), statistics.median(v["with"])
        print(f"{k:28} {a:18.2f} {b:16.2f} {b / a * 100 if a else 0:7.1f}%")
    print("\nkernel time per program invocation (one pass of all three loads, bpf stats on):")
    for p, vals in sorted(ns.items()):
        print(f"  {p:26} {statistics.median(v for v, _ in vals):8.1f} ns   ({sum(n for _, n in vals)} invocations)")
    total_time = args.reps * (3 * args.seconds)
    print(f"\nagent CPU: {cpu:.3f} s over ~{total_time} s of load ({cpu / total_time * 100:.3f}% of one core); peak RSS {rss:.1f} MB")


if __name__ == "__main__":
    main()
