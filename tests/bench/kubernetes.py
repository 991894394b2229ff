#!/usr/bin/env python3
"""sockscope on Kubernetes: memory of the remote index, and series under pod churn (prints
figures; not a test).

index: the in-test API server serves a synthetic cluster (default 10,000 pods, 2,000 services,
       100 nodes, 1,000 ReplicaSets; real pod JSON of ~2 KB each, listed in pages of 500 as
       the real API does); the agent runs once with the remote index and once without
       (--remote-index false). Prints index entries, time to sync, and the agent's resident
       memory (VmRSS, and VmHWM, the peak) for both.
churn: 100 pods/min for 5 minutes. Each pod gets a kubepods cgroup and an API object, makes one
       TCP exchange, lives 30 s, then its cgroup is removed and its object deleted. Samples
       the number of exported series and the agent's RSS every 30 s during the churn and for
       --observe minutes after it (default expiry grace: 5 min).

Usage (root): python3 tests/bench/kubernetes.py [--only index,churn] [--pods 10000]
              [--services 2000] [--minutes 5] [--rate 100] [--observe 6] [--expiry 5m]
Run scripts/setup.sh and `cargo build --release --bins` first (kubernetes.sh does both).
"""

import argparse
import os
import subprocess
import sys
import time
import urllib.request

from bench import cgroup2, free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")


def status(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out


def scrape(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def value(text, name, match=""):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and match in line and not line.startswith("#"):
            rest = line[len(name):]
            if rest[:1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
    return total


def series(text):
    """Exported series of the data families (self-metrics excluded)."""
    return sum(1 for l in text.splitlines()
               if l.startswith(("sockscope_tcp_", "sockscope_udp_", "sockscope_dns_queries",
                                "sockscope_dns_responses")))


class Api:
    def __init__(self, pods, services, nodes):
        self.p = subprocess.Popen([os.path.join(BIN, "sockscope-peer"), "kube-api", str(pods),
                                   str(services), str(nodes)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().split()
        assert line and line[0] == "ready", line
        self.port, self.kubeconfig = int(line[1]), line[2]

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        self.p.stdout.readline()

    def close(self):
        self.p.kill()
        self.p.wait()


class Agent:
    def __init__(self, cg, kubeconfig, extra=()):
        self.port = free_port()
        self.log = open(f"/tmp/sockscope-bench-k8s-{self.port}.log", "w")
        self.p = subprocess.Popen([os.path.join(BIN, "sockscope"), "--listen-address",
                                   f"127.0.0.1:{self.port}", "--cgroup-root", cg,
                                   "--kubeconfig", kubeconfig, "--node-name", "bench-node",
                                   *extra], stderr=self.log)
        self.started = time.monotonic()

    def wait(self, pred, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = scrape(self.port)
                if pred(text):
                    return text
            except OSError:
                pass
            time.sleep(0.2)
        sys.exit(f"agent did not get there in {timeout}s; log: {self.log.name}")

    def stop(self):
        self.p.terminate()
        self.p.wait()


def index_bench(args, cg):
    api = Api(args.pods, args.services, args.nodes)
    expected = args.pods + args.services + args.nodes + 1
    print(f"remote index: {args.pods} pods, {args.services} services, {args.nodes + 1} nodes, "
          f"{(args.pods + 9) // 10} ReplicaSets")
    results = {}
    for index in (True, False):
        for rep in range(args.reps):
            a = Agent(cg, api.kubeconfig, ["--remote-index", "true" if index else "false"])
            if index:
                a.wait(lambda t: value(t, "sockscope_kubernetes_remote_index_entries") >= expected
                       and value(t, "sockscope_kubernetes_up") == 1)
            else:
                a.wait(lambda t: value(t, "sockscope_kubernetes_up") == 1)
            synced = time.monotonic() - a.started
            time.sleep(5)
            st = status(a.p.pid)
            text = scrape(a.port)
            a.stop()
            results.setdefault(index, []).append((synced, st["VmRSS"], st["VmHWM"],
                                                  value(text, "sockscope_kubernetes_remote_index_entries")))
    api.close()
    for index, runs in results.items():
        best = min(runs, key=lambda r: r[1])
        name = "index on " if index else "index off"
        print(f"  {name}: entries {best[3]:.0f}, synced in {best[0]:.1f} s, "
              f"RSS {best[1]:.1f} MiB, peak RSS {best[2]:.1f} MiB  (all reps RSS: "
              + ", ".join(f"{r[1]:.1f}" for r in runs) + ")")
    on = min(r[1] for r in results[True])
    off = min(r[1] for r in results[False])
    print(f"  remote index costs {on - off:.1f} MiB resident "
          f"({(on - off) * 1024 * 1024 / expected:.0f} bytes per address)")


def churn_bench(args, cg):
    api = Api(0, 0, 0)
    a = Agent(cg, api.kubeconfig, ["--series-expiry", args.expiry])
    a.wait(lambda t: value(t, "sockscope_kubernetes_up") == 1)
    os.makedirs(os.path.join(cg, "server"), exist_ok=True)
    peer = os.path.join(BIN, "sockscope-peer")

    def in_cgroup(path):
        def move():
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write("0\n")
        return move

    srv = subprocess.Popen([peer, "tcp-server", "127.0.0.1:0", "1000000"], stdout=subprocess.PIPE,
                           text=True, preexec_fn=in_cgroup(os.path.join(cg, "server")))
    port = srv.stdout.readline().split()[1]
    live = []  # (deadline, n, dirs)
    n = 0
    period = 60.0 / args.rate
    start = time.monotonic()
    next_sample = start
    end_churn = start + args.minutes * 60
    end = end_churn + args.observe * 60
    print(f"churn: {args.rate} pods/min for {args.minutes} min, pods live 30 s, expiry {args.expiry}; "
          f"observing {args.observe} min more")
    print("  t(s)  live pods  created  series  RSS(MiB)")
    next_pod = start
    while time.monotonic() < end:
        now = time.monotonic()
        if now < end_churn and now >= next_pod:
            next_pod += period
            n += 1
            uid = f"{(6 << 40 | n) >> 32:08x}-{(6 << 40 | n) >> 16 & 0xffff:04x}-4{n & 0xfff:03x}-8{n >> 12 & 0xfff:03x}-{(6 << 40 | n) & 0xffffffffffff:012x}"
            cid = f"{n:016x}" * 4
            pod_dir = os.path.join(cg, "kubepods.slice", "kubepods-besteffort.slice",
                                   f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice")
            c_dir = os.path.join(pod_dir, f"cri-containerd-{cid}.scope")
            os.makedirs(c_dir)
            api.send(f"add {n}")
            subprocess.run([peer, "tcp-client", f"127.0.0.1:{port}", "1", "1", "2000", "1000"],
                           stdout=subprocess.DEVNULL, preexec_fn=in_cgroup(c_dir), check=True)
            live.append((now + 30, n, [c_dir, pod_dir]))
        while live and live[0][0] <= now:
            _, k, dirs = live.pop(0)
            for d in dirs:
                os.rmdir(d)
            api.send(f"del {k}")
        if now >= next_sample:
            next_sample += 30
            text = scrape(a.port)
            print(f"  {now - start:5.0f}  {len(live):9d}  {n:7d}  {series(text):6d}  "
                  f"{status(a.p.pid)['VmRSS']:8.1f}", flush=True)
        time.sleep(0.05)
    text = scrape(a.port)
    print(f"  expired series: {value(text, 'sockscope_series_expired_total'):.0f}; "
          f"metadata misses: {value(text, 'sockscope_metadata_misses_total'):.0f}; "
          f"peak RSS {status(a.p.pid)['VmHWM']:.1f} MiB")
    srv.kill()
    a.stop()
    api.close()
    for _, _, dirs in live:
        for d in dirs:
            os.rmdir(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="index,churn")
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--observe", type=float, default=6)
    ap.add_argument("--expiry", default="5m")
    args = ap.parse_args()
    cg = os.path.join(cgroup2(), f"sockscope-bench-k8s-{os.getpid()}")
    os.makedirs(cg, exist_ok=True)
    try:
        if "index" in args.only:
            index_bench(args, cg)
        if "churn" in args.only:
            churn_bench(args, cg)
    finally:
        for d in sorted((r for r, _, _ in os.walk(cg)), key=len, reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass


if __name__ == "__main__":
    main()
