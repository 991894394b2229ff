#!/usr/bin/env python3
"""sockscope with many series (prints figures; not a test): the real agent, real UDP sockets,
--label-remote-ip, and one datagram to each of N local addresses (a /16 routed to lo inside a
network namespace of the benchmark's own), so /metrics carries N flow series. Prints the
agent's resident memory, scrape latency (p50/p99 over 30 scrapes) and exposition size.

With --tcp, TCP connections instead (each its own flow, both ends in the measured cgroup): the
flows and the TCP timing histograms at their default labels (one per workload edge).

Usage (root): python3 tests/bench/series.py [--series 50000] [--tcp]
Run scripts/setup.sh and `cargo build --release --bins` first (series.sh does both).
"""

import argparse
import os
import subprocess
import sys
import time
import urllib.request

from bench import cgroup2, free_port
from kubernetes import status

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")

SENDER = r"""
import socket, sys, time
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    s.sendto(b"x", ("10.200.%d.%d" % (i // 250, i % 250 + 1), 9))
    if i % 5000 == 4999:
        time.sleep(0.6)   # stay under the per-interval flow map capacity
"""

TCP_SENDER = r"""
import socket, sys, threading, time
n, port = int(sys.argv[1]), int(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port))
ls.listen(4096)
def serve():
    for _ in range(n):
        c, _ = ls.accept()
        c.recv(1)
        c.close()
t = threading.Thread(target=serve)
t.start()
for i in range(n):
    s = socket.create_connection(("10.200.%d.%d" % (i // 250, i % 250 + 1), port))
    s.sendall(b"x")
    s.close()
    if i % 5000 == 4999:
        time.sleep(0.6)
t.join()
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=50000)
    ap.add_argument("--otlp", choices=["grpc", "http"], help="also export over OTLP to a local receiver every 2 s")
    ap.add_argument("--tcp", action="store_true", help="TCP connections (flows and timing histograms), not UDP")
    ap.add_argument("--otlp-gzip", action="store_true", help="with --otlp: gzip the requests (prints their size on the wire)")
    args = ap.parse_args()
    tag = f"ssrs{os.getpid() % 10000}"
    cg = os.path.join(cgroup2(), f"sockscope-bench-series-{os.getpid()}")
    os.makedirs(os.path.join(cg, "sender"), exist_ok=True)
    subprocess.run(f"ip netns add {tag} && ip -n {tag} link set lo up && "
                   f"ip -n {tag} route add local 10.200.0.0/16 dev lo table local",
                   shell=True, check=True)
    port = free_port()
    extra = []
    receiver = None
    if args.otlp:
        receiver = subprocess.Popen([os.path.join(BIN, "sockscope-peer"), "otlp-receiver", args.otlp, "127.0.0.1:0"],
                                    stdout=subprocess.PIPE, text=True)
        rport = receiver.stdout.readline().split()[1]
        # Drain what it prints so it never blocks on a full pipe; keep the size of the last
        # request as it arrived (HTTP: the body on the wire, compressed or not).
        import threading
        wire = {}

        def drain_receiver():
            for line in receiver.stdout:
                if line.startswith("request "):
                    wire["bytes"] = int(line.split()[1])
        threading.Thread(target=drain_receiver, daemon=True).start()
        extra = ["--otlp-endpoint", f"http://127.0.0.1:{rport}", "--otlp-protocol",
                 "grpc" if args.otlp == "grpc" else "http/protobuf", "--otlp-interval", "2s"]
        if args.otlp_gzip:
            extra += ["--otlp-compression", "gzip"]
    agent = subprocess.Popen([os.path.join(BIN, "sockscope"), "--listen-address", f"127.0.0.1:{port}",
                              "--cgroup-root", cg, "--label-remote-ip", "--interval", "1s",
                              # One workload, 50,000 peers: every one its own series.
                              "--max-remote-ips-per-workload", "1000000", "--max-flows-per-cgroup", "65536",
                              *extra],
                             stderr=subprocess.DEVNULL)
    def rss_over(seconds, scrape=False):
        # Sampled through several drains (1 s apart), scraping as Prometheus would: the most it
        # held, not a lucky moment between a drain's allocations and their release.
        top = 0.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if scrape:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
            top = max(top, status(agent.pid)["VmRSS"])
            time.sleep(0.1)
        return top

    try:
        time.sleep(1)
        base = rss_over(4, scrape=True)
        def enter():
            with open(os.path.join(cg, "sender", "cgroup.procs"), "w") as f:
                f.write("0\n")
        sender = [TCP_SENDER, str(args.series), str(free_port())] if args.tcp else [SENDER, str(args.series)]
        subprocess.run(["ip", "netns", "exec", tag, sys.executable, "-c", *sender],
                       preexec_fn=enter, check=True)
        family = b"sockscope_tcp_sent_bytes_total{" if args.tcp else b"sockscope_udp_sent_bytes_total{"
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 120
        while True:
            body = urllib.request.urlopen(url, timeout=30).read()
            n = sum(1 for l in body.split(b"\n") if l.startswith(family) and b'role="client"' in l)
            if n >= args.series or time.monotonic() > deadline:
                break
            time.sleep(1)
        time.sleep(3)
        held = rss_over(8, scrape=True)
        st = status(agent.pid)
        times = []
        for _ in range(30):
            t = time.monotonic()
            body = urllib.request.urlopen(url, timeout=30).read()
            times.append(time.monotonic() - t)
        times.sort()
        by_source = {}
        for l in body.split(b"\n"):
            if l.startswith(b"sockscope_events_folded_total{") and float(l.rsplit(b" ", 1)[1]):
                by_source[l.split(b'source="')[1].split(b'"')[0].decode()] = float(l.rsplit(b" ", 1)[1])
        folded = ", ".join(f"{k} {v:.0f}" for k, v in sorted(by_source.items())) or "0"
        lines = [l for l in body.split(b"\n") if l and not l.startswith(b"#")]
        timing = sum(1 for l in lines if l.startswith((b"sockscope_tcp_connect_duration_seconds",
                                                       b"sockscope_tcp_rtt_seconds",
                                                       b"sockscope_tcp_connection_duration_seconds")))
        print(f"series: {n} {'TCP' if args.tcp else 'UDP'} client flows; {len(lines)} series in all"
              + (f", {timing} of them TCP timing histogram series" if args.tcp else "")
              + f"; updates folded into overflow: {folded}")
        print(f"agent RSS (most over 4 s / 8 s of drains and scrapes): {base:.1f} MiB before, "
              f"{held:.1f} MiB with the series, {(held - base) * 1024 * 1024 / max(n, 1):.0f} bytes per series "
              f"(peak ever {st['VmHWM']:.1f} MiB)")
        print(f"scrape: p50 {times[len(times) // 2] * 1e3:.1f} ms, p99 {times[-1] * 1e3:.1f} ms, "
              f"{len(body) / 1024:.0f} KiB")
        if args.otlp:
            durations = []
            for _ in range(10):
                time.sleep(2)
                text = urllib.request.urlopen(url, timeout=30).read().decode()
                for l in text.splitlines():
                    if l.startswith("sockscope_otlp_last_export_duration_seconds "):
                        durations.append(float(l.split()[1]))
                    if l.startswith("sockscope_otlp_last_export_bytes "):
                        size = float(l.split()[1])
            durations.sort()
            print(f"OTLP {args.otlp} export (send and wait for the receiver's answer): "
                  f"median {durations[len(durations) // 2] * 1e3:.1f} ms, max {durations[-1] * 1e3:.1f} ms, "
                  f"{size / 1024:.0f} KiB per request"
                  + (f" ({wire['bytes'] / 1024:.0f} KiB on the wire, gzip)" if args.otlp_gzip and args.otlp == "http" and "bytes" in wire else ""))
    finally:
        agent.terminate()
        agent.wait()
        if receiver:
            receiver.kill()
        subprocess.run(f"ip netns del {tag}", shell=True)
        for d in (os.path.join(cg, "sender"), cg):
            try:
                os.rmdir(d)
            except OSError:
                pass


if __name__ == "__main__":
    main()
