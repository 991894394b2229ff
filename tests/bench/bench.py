#!/usr/bin/env python3
"""sockscope overhead benchmark (prints figures; not a test).

Measures, with and without sockscope attached to the benchmark's cgroup, in interleaved runs:
  - iperf3 TCP throughput over loopback and over a veth pair between two network namespaces;
  - connection churn: wrk without keep-alive (one TCP connection per request) against a small
    HTTP server;
  - DNS: dnsperf at its maximum rate against unbound in the other namespace (queries/s);
and, from the runs with sockscope:
  - kernel ns per program invocation (BPF run-time stats, kernel.bpf_stats_enabled=1);
  - the agent's CPU seconds and peak RSS.

Usage (root): python3 tests/bench/bench.py [--reps 5] [--seconds 5] [--only iperf3,churn,dns]
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
    try:
        # The server may take a moment to listen: retry a refused client.
        for _ in range(20):
            time.sleep(0.2)
            cli = setup.spawn(f"{ns_c}iperf3 -c {host} -p {port} -t {seconds} -J",
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            out, _ = cli.communicate(timeout=seconds + 30)
            if cli.returncode == 0:
                srv.wait(timeout=10)
                return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
        sys.exit("iperf3 client could not run")
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


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


DNS_STATS_RATE = 50000  # below saturation (2 CPUs: ~85k/s), so run-time stats are not inflated by preemption
DNS_NAMES = [f"n{i}.bench.test" for i in range(20)]


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
        for _ in range(100):
            if "NOERROR" in sh(f"ip netns exec {setup.a} kdig +retry=0 +timeout=1 @10.252.0.2 ns.bench.test A", check=False).stdout:
                return
            time.sleep(0.1)
        sys.exit("unbound did not start")

    def close(self):
        self.p.kill()
        self.p.wait()
        sh(f"rm -rf {self.dir}", check=False)


def dnsperf(setup, unbound, seconds, rate=None, port=53):
    """Maximum rate (2 sockets, up to 200 queries in flight), or a fixed rate.
    Returns (queries/s, sent, lost)."""
    limit = f" -Q {rate}" if rate else ""
    cli = setup.spawn(f"ip netns exec {setup.a} dnsperf -s 10.252.0.2 -p {port} -d {unbound.queries} -l {seconds} -c 2 -q 200{limit}",
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out, _ = cli.communicate(timeout=seconds + 30)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    sent = re.search(r"Queries sent:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    return (float(qps.group(1)) if qps else 0.0, int(sent.group(1)) if sent else 0, int(lost.group(1)) if lost else 0)


def metric_sum(text, name, label_filter=""):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label_filter in line:
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


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
    ap.add_argument("--only", default="iperf3,churn,dns", help="comma-separated: iperf3, churn, dns")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if os.geteuid() != 0:
        sys.exit("run as root")
    old_stats = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    setup = Setup()
    unbound = Unbound(setup) if "dns" in only else None
    keys = []
    if "iperf3" in only:
        keys += ["iperf3 loopback Gbit/s", "iperf3 veth Gbit/s"]
    if "churn" in only:
        keys += ["churn conn/s"]
    if "dns" in only:
        keys += ["dnsperf queries/s"]
    results = {k: {"without": [], "with": []} for k in keys}
    ns, dns_ns, udp_ns, cpu, rss = {}, {}, {}, 0.0, 0.0
    dns_check = None
    load_seconds = 0

    def loads(mode):
        if "iperf3" in only:
            results["iperf3 loopback Gbit/s"][mode].append(iperf(setup, False, args.seconds))
            results["iperf3 veth Gbit/s"][mode].append(iperf(setup, True, args.seconds))
        if "churn" in only:
            results["churn conn/s"][mode].append(churn(setup, args.seconds))
        if "dns" in only:
            results["dnsperf queries/s"][mode].append(dnsperf(setup, unbound, args.seconds)[0])

    try:
        # Throughput runs with run-time stats off: stats add two clock reads per invocation.
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write("0")
        for rep in range(args.reps):
            for mode in ("without", "with"):
                agent = Agent(setup.cg) if mode == "with" else None
                loads(mode)
                if agent:
                    cpu += agent.cpu() - agent.cpu0
                    rss = max(rss, agent.rss_peak_mb())
                    agent.stop()
            load_seconds += len(keys) * args.seconds
            print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")
        if "iperf3" in only or "churn" in only:
            # One more pass with stats on, for kernel ns per invocation.
            agent = Agent(setup.cg)
            if "iperf3" in only:
                iperf(setup, False, args.seconds)
                iperf(setup, True, args.seconds)
            if "churn" in only:
                churn(setup, args.seconds)
            time.sleep(1.2)  # one more drain so run stats are current
            for p, (v, n) in run_stats(agent.metrics()).items():
                ns.setdefault(p, []).append((v, n))
            rss = max(rss, agent.rss_peak_mb())
            agent.stop()
        if "dns" in only:
            # DNS alone, stats on: every packet the programs see is a DNS query or response.
            # At a fixed rate well below saturation: with both CPUs saturated, the run-time stats
            # of programs running in process context include time they were preempted.
            agent = Agent(setup.cg)
            dnsperf(setup, unbound, args.seconds, rate=DNS_STATS_RATE)
            time.sleep(1.2)
            for p, (v, n) in run_stats(agent.metrics()).items():
                dns_ns[p] = (v, n)
            agent.stop()
            # The same packets to port 5353: the UDP byte accounting alone, no DNS parsing.
            agent = Agent(setup.cg)
            dnsperf(setup, unbound, args.seconds, rate=DNS_STATS_RATE, port=5353)
            time.sleep(1.2)
            for p, (v, n) in run_stats(agent.metrics()).items():
                udp_ns[p] = (v, n)
            agent.stop()
            # And at the maximum rate: exact counts, forwarding and drops.
            agent = Agent(setup.cg)
            qps, sent, lost = dnsperf(setup, unbound, args.seconds)
            time.sleep(2.5)  # drains, and the answer sweep for queries dnsperf gave up on
            text = agent.metrics()
            dns_check = {
                "qps": qps, "sent": sent, "lost": lost,
                "counted": metric_sum(text, "sockscope_dns_queries_total{"),
                "responses": metric_sum(text, "sockscope_dns_responses_total{"),
                "ringbuf_drops": metric_sum(text, "sockscope_events_lost_total{", 'source="dns_ringbuf"'),
                "forwarded": metric_sum(text, "sockscope_dns_answers_total{"),
                "map_full": metric_sum(text, "sockscope_events_folded_total{", 'source="dns_map_full"')
                + metric_sum(text, "sockscope_events_folded_total{", 'source="dns_cgroup_limit"')
                + metric_sum(text, "sockscope_events_lost_total{", 'source="dns_pending_evicted"'),
            }
            rss = max(rss, agent.rss_peak_mb())
            agent.stop()
    finally:
        open("/proc/sys/kernel/bpf_stats_enabled", "w").write(old_stats)
        if unbound:
            unbound.close()
        setup.close()

    print(f"\nsockscope benchmark: {args.reps} interleaved reps x {args.seconds}s, {os.cpu_count()} CPUs, kernel {os.uname().release}")
    print(f"{'measure':28} {'without (median)':>18} {'with (median)':>16} {'ratio':>8}")
    for k, v in results.items():
        a, b = statistics.median(v["without"]), statistics.median(v["with"])
        print(f"{k:28} {a:18.2f} {b:16.2f} {b / a * 100 if a else 0:7.1f}%")
    if ns:
        print("\nkernel time per program invocation (one pass of the TCP loads, bpf stats on):")
        for p, vals in sorted(ns.items()):
            print(f"  {p:26} {statistics.median(v for v, _ in vals):8.1f} ns   ({sum(n for _, n in vals)} invocations)")
    if dns_check:
        print(f"\nDNS path (dnsperf alone at {DNS_STATS_RATE} queries/s, bpf stats on; every invocation is a DNS packet):")
        for p in ("sockscope_egress", "sockscope_ingress"):
            if p in dns_ns:
                v, n = dns_ns[p]
                base = udp_ns.get(p, (0.0, 0))[0]
                print(f"  {p:26} {v:8.1f} ns   ({n} invocations); same packets to port 5353 (UDP bytes only): "
                      f"{base:.1f} ns, so DNS adds {v - base:.1f} ns")
        d = dns_check
        print(f"  max rate, bpf stats on: {d['qps']:.0f} queries/s; dnsperf sent {d['sent']} (lost {d['lost']}), sockscope counted "
              f"{d['counted']:.0f} queries and {d['responses']:.0f} responses")
        print(f"  answers forwarded to userspace: {d['forwarded']:.0f}; ring buffer drops: {d['ringbuf_drops']:.0f}; "
              f"DNS map full/pending evicted: {d['map_full']:.0f}")
    print(f"\nagent CPU: {cpu:.3f} s over ~{load_seconds} s of load ({cpu / max(load_seconds, 1) * 100:.3f}% of one core); peak RSS {rss:.1f} MB")


if __name__ == "__main__":
    main()
