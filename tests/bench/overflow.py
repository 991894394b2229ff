#!/usr/bin/env python3
"""Kernel capacity under sprays (prints figures; not a test).

1. One workload sends one 7-byte datagram to each of N peers (10.200.0.0/14, local in a
   network namespace of the benchmark's own) within one drain interval, beside a bulk TCP
   transfer of another workload: bytes counted against bytes sent, series, updates folded.
2. Fairness: a flow map of 16384 entries; one workload sprays 60,000 peers, then a neighbour
   reaches 300 peers in the same interval (30 s long). With the per-cgroup share (2048) and
   without it (--max-flows-per-cgroup 16384): how many of the neighbour's peers keep their own
   series (--label-remote-ip), and the kernel memory of the full flow map.

Usage (root): python3 tests/bench/overflow.py [--peers 60000 100000]
Run scripts/setup.sh and `cargo build --release --bins` first (overflow.sh does both).
"""

import argparse
import json
import os
import re
import subprocess
import time
import urllib.request

from bench import cgroup2, free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")


def metrics(port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = []
    for line in body.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        head, value = line.rsplit(" ", 1)
        name, _, labels = head.partition("{")
        out.append((name, dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)), float(value)))
    return out


def total(ms, name, **want):
    return sum(v for n, l, v in ms if n == name and all(l.get(k) == x for k, x in want.items()))


def series(ms, name, **want):
    return [l for n, l, _ in ms if n == name and all(l.get(k) == x for k, x in want.items())]


class Setup:
    def __init__(self, tag, args):
        self.tag = tag
        self.cg = os.path.join(cgroup2(), f"sockscope-bench-overflow-{tag}-{os.getpid()}")
        for child in ["spray", "neighbour", "bulk-server", "bulk-client"]:
            os.makedirs(os.path.join(self.cg, child), exist_ok=True)
        self.ns = f"ssof{os.getpid() % 10000}{tag}"
        subprocess.run(f"ip netns add {self.ns} && ip -n {self.ns} link set lo up && "
                       f"ip -n {self.ns} route add local 10.200.0.0/14 dev lo table local",
                       shell=True, check=True)
        self.port = free_port()
        self.agent = subprocess.Popen([os.path.join(BIN, "sockscope"), "--listen-address",
                                       f"127.0.0.1:{self.port}", "--cgroup-root", self.cg, *args],
                                      stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status == 200:
                    break
            except Exception:
                time.sleep(0.1)

    def run(self, child, argv, netns=True, wait=True):
        def enter():
            with open(os.path.join(self.cg, child, "cgroup.procs"), "w") as f:
                f.write("0\n")
        cmd = (["ip", "netns", "exec", self.ns] if netns else []) + [os.path.join(BIN, "sockscope-peer"), *argv]
        p = subprocess.Popen(cmd, preexec_fn=enter, stdout=subprocess.PIPE, text=True)
        if wait:
            out, _ = p.communicate()
            return out
        return p

    def close(self):
        self.agent.terminate()
        self.agent.wait()
        subprocess.run(["ip", "netns", "del", self.ns])
        subprocess.run(f"echo 1 > {self.cg}/cgroup.kill 2>/dev/null; sleep 0.3; "
                       f"find {self.cg} -depth -type d -exec rmdir {{}} \\;", shell=True)


def spray(peers):
    s = Setup(f"s{peers}", ["--interval", "5s"])
    try:
        srv = s.run("bulk-server", ["tcp-server", "127.0.0.1:0", "4"], netns=False, wait=False)
        port = srv.stdout.readline().split()[1]
        cli = s.run("bulk-client", ["tcp-client", f"127.0.0.1:{port}", "4", "4", "8000000", "2000000"],
                    netns=False, wait=False)
        t = time.monotonic()
        s.run("spray", ["udp-spray", str(peers), "7"])
        took = time.monotonic() - t
        c = cli.communicate()[0].split()
        srv.communicate()
        want = peers * 7
        deadline = time.monotonic() + 30
        while True:
            ms = metrics(s.port)
            got = total(ms, "sockscope_udp_sent_bytes_total", workload="spray")
            tcp = total(ms, "sockscope_tcp_sent_bytes_total", workload="bulk-client")
            if (got >= want and tcp >= float(c[1])) or time.monotonic() > deadline:
                break
            time.sleep(1)
        folded = total(ms, "sockscope_udp_sent_bytes_total", workload="spray", remote_class="~overflow")
        print(f"spray of {peers} peers in {took:.2f}s: {got:.0f} of {want} bytes counted "
              f"({100 * got / want:.1f}%), {folded:.0f} of them in the overflow entry; "
              f"bulk TCP: {tcp:.0f} of {c[1]} bytes; "
              f"folded updates {total(ms, 'sockscope_events_folded_total'):.0f}, "
              f"lost {total(ms, 'sockscope_events_lost_total'):.0f}")
    finally:
        s.close()


def fairness(share):
    args = ["--interval", "30s", "--label-remote-ip", "--max-remote-ips-per-workload", "1000000",
            "--flow-map-size", "16384"]
    args += ["--max-flows-per-cgroup", str(share)]
    s = Setup(f"f{share}", args)
    try:
        s.run("spray", ["udp-spray", "60000", "7"])
        s.run("neighbour", ["udp-spray", "300", "7", "100000"])
        mem = subprocess.run(["bpftool", "map", "show", "-j"], capture_output=True, text=True).stdout
        full = max((m.get("bytes_memlock", 0) for m in json.loads(mem or "[]")
                    if m.get("name", "").startswith("FLOWS_")), default=0)
        deadline = time.monotonic() + 60
        while True:
            ms = metrics(s.port)
            if total(ms, "sockscope_udp_sent_bytes_total", workload="neighbour") >= 2100 or time.monotonic() > deadline:
                break
            time.sleep(1)
        own = [l for l in series(ms, "sockscope_udp_sent_bytes_total", workload="neighbour")
               if l.get("remote_class") != "~overflow"]
        label = f"per-cgroup share {share}" if share < 16384 else "no share (16384, the whole map)"
        print(f"fairness, {label}: neighbour keeps {len(own)} of 300 peers; "
              f"neighbour bytes {total(ms, 'sockscope_udp_sent_bytes_total', workload='neighbour'):.0f} of 2100; "
              f"fullest flow map {full / 2**20:.1f} MiB")
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, nargs="*", default=[60000, 100000])
    args = ap.parse_args()
    for n in args.peers:
        spray(n)
    fairness(2048)
    fairness(16384)


if __name__ == "__main__":
    main()
