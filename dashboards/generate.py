#!/usr/bin/env python3
"""Generates the Grafana dashboards (dashboards/*.json) from one description, so every panel
gets the same datasource variable, filters and conventions. Run after editing:

    python3 dashboards/generate.py [OUTPUT_DIR]

Each panel is (title, unit, kind, [PromQL targets], description). `$sel` in a query expands
to the dashboard's label filters (cluster, namespace, workload).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'cluster=~"$cluster", namespace=~"$namespace", workload=~"$workload"'

# Ports of common databases, for the shared-database view.
DB_PORTS = "5432|3306|27017|6379|9042|9200|1433|1521|11211|26257"

# A workload edge, as the TCP timing histograms are kept (README, Metrics): owner workload x
# peer workload, name or class x port.
EDGE = "namespace, workload, remote_namespace, remote_workload, remote_host, remote_class, port"
EDGE_LEGEND = "{{namespace}}/{{workload}} -> {{remote_workload}} {{remote_host}} ({{remote_class}}) :{{port}}"

# A dependency as the recording rules and SockscopeNewDependency keep it (alerts/sockscope.rules.yml):
# owner workload x peer workload, else name, else class; no port.
NEW_EDGE = "namespace, workload, remote_namespace, remote_workload, remote_host, remote_class"


def quantile(q, histogram, matchers):
    """The q-quantile of `histogram` per edge, over the panel's rate interval."""
    return (f"histogram_quantile({q}, sum by (le, {EDGE}) "
            f"(rate({histogram}_bucket{{$sel, {matchers}}}[$__rate_interval])))")


def variables(extra=()):
    def query_var(name, query, label):
        return {
            "name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "sort": 1,
        }
    v = [
        # No "current": Grafana selects the default Prometheus data source.
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "hide": 0},
        query_var("cluster", "label_values(sockscope_build_info, cluster)", "Cluster"),
        query_var("namespace", 'label_values(sockscope_tcp_sent_bytes_total{cluster=~"$cluster"}, namespace)',
                  "Namespace"),
        query_var("workload",
                  'label_values(sockscope_tcp_sent_bytes_total{cluster=~"$cluster", namespace=~"$namespace"}, workload)',
                  "Workload"),
    ]
    return v + list(extra)


def panel(pid, x, y, w, h, title, unit, kind, targets, description, legend="{{namespace}}/{{workload}}"):
    p = {
        "id": pid, "title": title, "description": description, "type": kind, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [],
        "options": {},
    }
    for i, t in enumerate(targets):
        # A target is a query, or (query, legend) when its series need their own legend.
        expr, own_legend = (t, None) if isinstance(t, str) else t
        target = {"refId": chr(65 + i), "datasource": DS, "expr": expr.replace("$sel", SEL),
                  "legendFormat": own_legend or legend}
        if kind in ("table", "nodeGraph"):
            target.update({"format": "table", "instant": True, "range": False})
        p["targets"].append(target)
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "fillOpacity": 10}
        p["options"] = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]},
                        "tooltip": {"mode": "multi"}}
    if kind == "table":
        p["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]
    return p


def dashboard(uid, title, description, rows, extra_vars=()):
    panels = []
    y = 0
    pid = 1
    for row in rows:
        x = 0
        h = max(8, max(9 if p[2] in ("table", "nodeGraph") else 8 for p in row))
        w = 24 // len(row)
        for (title_, unit, kind, targets, desc, *legend) in row:
            panels.append(panel(pid, x, y, w, h, title_, unit, kind, targets, desc, *legend))
            pid += 1
            x += w
        y += h
    return {
        "uid": uid, "title": title, "description": description, "tags": ["sockscope"],
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "timezone": "",
        "templating": {"list": variables(extra_vars)}, "annotations": {"list": []},
        # Every field of Grafana's DashboardLink is required in its published type (@grafana/schema).
        "links": [{"title": "sockscope dashboards", "type": "dashboards", "tags": ["sockscope"], "asDropdown": True,
                   "icon": "external link", "tooltip": "", "includeVars": False, "keepTime": False,
                   "targetBlank": False}],
        "panels": panels,
    }


OVERVIEW = dashboard("sockscope-overview", "sockscope / Overview",
    "Bytes, connections, retransmits, resets and packet drops by namespace and workload.", [
    [("TCP bytes sent/s by workload", "Bps", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_tcp_sent_bytes_total{$sel}[$__rate_interval]))'],
      "Payload bytes acknowledged by peers, per second."),
     ("TCP bytes received/s by workload", "Bps", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_tcp_received_bytes_total{$sel}[$__rate_interval]))'],
      "Payload bytes received, per second.")],
    [("UDP bytes/s by workload", "Bps", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_udp_sent_bytes_total{$sel}[$__rate_interval]) + rate(sockscope_udp_received_bytes_total{$sel}[$__rate_interval]))'],
      "UDP payload bytes sent and received, per second."),
     ("Bytes/s by namespace", "Bps", "timeseries",
      ['sum by (namespace) (rate(sockscope_tcp_sent_bytes_total{$sel}[$__rate_interval]) + rate(sockscope_tcp_received_bytes_total{$sel}[$__rate_interval]))'],
      "TCP bytes in and out per namespace.", "{{namespace}}")],
    [("Top talkers (bytes over the range)", "bytes", "table",
      ['topk(20, sum by (namespace, workload, remote_namespace, remote_workload, remote_host, port) (increase(sockscope_tcp_sent_bytes_total{$sel}[$__range]) + increase(sockscope_tcp_received_bytes_total{$sel}[$__range])))'],
      "The 20 busiest workload -> peer pairs over the dashboard's time range.")],
    [("Connections opened/s", "ops", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_tcp_connections_opened_total{$sel}[$__rate_interval]))'],
      "TCP connections established, both roles."),
     ("Connections closed/s", "ops", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_tcp_connections_closed_total{$sel}[$__rate_interval]))'],
      "TCP connections closed."),
     ("Connect failures/s", "ops", "timeseries",
      ['sum by (namespace, workload, port) (rate(sockscope_tcp_connect_failures_total{$sel}[$__rate_interval]))'],
      "Client connects refused, timed out, reset or aborted.", "{{namespace}}/{{workload}} :{{port}}")],
    [("Retransmitted segments/s", "ops", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_tcp_retransmits_total{$sel}[$__rate_interval]))'],
      "TCP segments retransmitted."),
     ("Retransmit ratio (estimated)", "percentunit", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_tcp_retransmits_total{$sel}[$__rate_interval])) / (sum by (namespace, workload) (rate(sockscope_tcp_sent_bytes_total{$sel}[$__rate_interval])) / 1448)'],
      "Retransmitted segments per sent segment, segments estimated as bytes/1448.")],
    [("Packet drops/s by workload and reason", "pps", "timeseries",
      ['sum by (namespace, workload, reason, direction) (rate(sockscope_packet_drops_total{$sel, workload!=""}[$__rate_interval]))'],
      "Packets of the workload's sockets the kernel dropped, by its drop reason (NETFILTER_DROP: a firewall or network policy; TCP_LISTEN_OVERFLOW: a full accept queue; SOCKET_RCVBUFF: a full receive buffer) and direction (sent: made here, received: came in). The node's own drops are on the Health dashboard.",
      "{{namespace}}/{{workload}} {{reason}} {{direction}}"),
     ("TCP resets/s by workload", "ops", "timeseries",
      ['sum by (namespace, workload, direction) (rate(sockscope_tcp_resets_total{$sel}[$__rate_interval]))'],
      "Resets on the workload's connections: sent (an abortive close, SO_LINGER 0, an answer to a stray segment) and received (a refused connect, the peer aborting).",
      "{{namespace}}/{{workload}} {{direction}}")],
])

DEPENDENCIES = dashboard("sockscope-dependencies", "sockscope / Dependencies",
    "Who talks to whom: workloads, their remote workloads, hostnames and ports; connect time, RTT and connection lifetime per edge; new dependencies.", [
    [("Workload -> peer (connections over the range)", "short", "table",
      ['sum by (namespace, workload, remote_namespace, remote_workload, remote_class, port) (increase(sockscope_tcp_connections_opened_total{$sel, role="client"}[$__range]))'],
      "Client-side connections per destination workload and service port.")],
    [("Dependency graph", "short", "nodeGraph",
      ['sum by (id, title) (label_replace(label_join(sum by (namespace, workload) (increase(sockscope_tcp_connections_opened_total{$sel, role="client"}[$__range])), "id", "/", "namespace", "workload"), "title", "$1", "workload", "(.*)") or label_replace(label_join(sum by (remote_namespace, remote_workload) (increase(sockscope_tcp_connections_opened_total{$sel, role="client", remote_workload!=""}[$__range])), "id", "/", "remote_namespace", "remote_workload"), "title", "$1", "remote_workload", "(.*)")) * 0 + 1',
       'sum by (id, source, target) (label_join(label_join(label_join(sum by (namespace, workload, remote_namespace, remote_workload) (increase(sockscope_tcp_connections_opened_total{$sel, role="client", remote_workload!=""}[$__range])), "source", "/", "namespace", "workload"), "target", "/", "remote_namespace", "remote_workload"), "id", "->", "source", "target"))'],
      "Workloads as nodes, client connections as edges (node graph: frames A = nodes, B = edges).")],
    [("Cross-namespace traffic (bytes over the range)", "bytes", "table",
      ['sum by (namespace, workload, remote_namespace, remote_workload, port) (increase(sockscope_tcp_sent_bytes_total{$sel, role="client", remote_namespace!=""}[$__range])) unless on (namespace, workload, remote_namespace, remote_workload, port) label_replace(sum by (namespace, workload, remote_namespace, remote_workload, port) (increase(sockscope_tcp_sent_bytes_total{$sel, role="client", remote_namespace!=""}[$__range])), "remote_namespace", "$1", "namespace", "(.*)")'],
      "Client traffic whose peer is in another namespace."),
     ("Remote hosts per workload (connections over the range)", "short", "table",
      ['sum by (namespace, workload, remote_host, port) (increase(sockscope_tcp_connections_opened_total{$sel, role="client", remote_host!=""}[$__range]))'],
      "The names workloads resolved for the peers they connect to.")],
    [("External (public) destinations", "bytes", "table",
      ['sum by (namespace, workload, remote_host, port) (increase(sockscope_tcp_sent_bytes_total{$sel, role="client", remote_class="public"}[$__range]) + increase(sockscope_tcp_received_bytes_total{$sel, role="client", remote_class="public"}[$__range]))'],
      "Egress inventory: public peers per workload, by resolved name and port."),
     ("Bytes/s by remote class", "Bps", "timeseries",
      ['sum by (remote_class) (rate(sockscope_tcp_sent_bytes_total{$sel}[$__rate_interval]) + rate(sockscope_tcp_received_bytes_total{$sel}[$__rate_interval]))'],
      "Traffic to pods, services, nodes, private and public peers.", "{{remote_class}}")],
    [("Connect time p50/p99 by edge", "s", "timeseries",
      [(quantile(q, "sockscope_tcp_connect_duration_seconds", 'role="client"'), f"p{int(q * 100)} " + EDGE_LEGEND)
       for q in (0.5, 0.99)],
      "Client SYN to established, per workload -> peer edge and port, SYN retransmits included: "
      "(1 s, 3 s] is a connect that needed one (a full accept queue, a lost SYN). "
      "Failed connects are on the Overview's connect failures."),
     ("RTT p50/p99 by edge", "s", "timeseries",
      [(quantile(q, "sockscope_tcp_rtt_seconds", 'role="client"'), f"p{int(q * 100)} " + EDGE_LEGEND)
       for q in (0.5, 0.99)],
      "The kernel's smoothed round-trip time of the edge's connections, client side, sampled once per "
      "drain interval while a connection sends and at its close.")],
    [("Connection lifetime p50/p99 by edge", "s", "timeseries",
      [(quantile(q, "sockscope_tcp_connection_duration_seconds", 'role="client"'), f"p{int(q * 100)} " + EDGE_LEGEND)
       for q in (0.5, 0.99)],
      "Established to closed, client side, of the connections that closed in each interval: "
      "short lifetimes on an edge meant to pool connections are a pool that does not reuse them.")],
    [("New dependencies (none in the 7 days before the range)", "short", "table",
      ['max_over_time(edge:sockscope_tcp_connections_opened:increase10m{$sel}[$__range]) > 0 '
       'unless on (' + NEW_EDGE + ') (max_over_time(edge:sockscope_tcp_connections_opened:seen1h{$sel}[7d] offset $__range) '
       'or max_over_time(edge:sockscope_tcp_connections_opened:increase10m{$sel}[1h] offset $__range) > 0)'],
      "Client -> server edges that opened connections during the time range and none in the 7 days before it, "
      "as SockscopeNewDependency sees them: the peer is a workload (remote_namespace/remote_workload), else the name "
      "the client resolved (remote_host), else its class (remote_class: unnamed addresses, nodes). Value: the most "
      "connections the edge opened in 10 minutes. From the recording rules of alerts/sockscope.rules.yml.")],
])

DNS = dashboard("sockscope-dns", "sockscope / DNS",
    "DNS queries, answers, errors, latency and timeouts per workload and name; external domains and watchlist hits.", [
    [("Queries/s by workload", "reqps", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_dns_queries_total{$sel}[$__rate_interval]))'],
      "DNS queries leaving the workload's sockets."),
     ("Top qnames (queries over the range)", "short", "table",
      ['topk(20, sum by (namespace, workload, qname, qtype) (increase(sockscope_dns_queries_total{$sel}[$__range])))'],
      "The 20 most asked names.")],
    [("NXDOMAIN ratio by workload", "percentunit", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_dns_responses_total{$sel, rcode="NXDOMAIN"}[$__rate_interval])) / sum by (namespace, workload) (rate(sockscope_dns_responses_total{$sel}[$__rate_interval]))'],
      "Share of answers saying the name does not exist."),
     ("SERVFAIL ratio by workload", "percentunit", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_dns_responses_total{$sel, rcode="SERVFAIL"}[$__rate_interval])) / sum by (namespace, workload) (rate(sockscope_dns_responses_total{$sel}[$__rate_interval]))'],
      "Share of answers where the resolver failed.")],
    [("Failing names (NXDOMAIN/SERVFAIL over the range)", "short", "table",
      ['topk(20, sum by (namespace, workload, qname, rcode) (increase(sockscope_dns_responses_total{$sel, rcode=~"NXDOMAIN|SERVFAIL"}[$__range])))'],
      "Which names fail, for whom.")],
    [("Latency p50/p90/p99", "s", "timeseries",
      [('histogram_quantile(0.5, sum by (le) (rate(sockscope_dns_latency_seconds_bucket{$sel}[$__rate_interval])))', "p50"),
       ('histogram_quantile(0.9, sum by (le) (rate(sockscope_dns_latency_seconds_bucket{$sel}[$__rate_interval])))', "p90"),
       ('histogram_quantile(0.99, sum by (le) (rate(sockscope_dns_latency_seconds_bucket{$sel}[$__rate_interval])))', "p99")],
      "Query leaving the socket to its response arriving, measured in the kernel."),
     ("Timeouts/s by workload", "reqps", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_dns_timeouts_total{$sel}[$__rate_interval]))'],
      "Queries without a response within sockscope's --dns-timeout.")],
    [("External domains by workload", "short", "table",
      ['sum by (namespace, workload, qname) (increase(sockscope_dns_queries_total{$sel, qname_class="external"}[$__range]))'],
      "Names outside the cluster domain, its search domains and the configured domain classes (qname_class=\"external\") "
      "that each workload asked for, with their queries over the range: the workload's egress by name."),
     # A counter's first sample is no increase, and a watched name may be asked once: a series
     # that appeared during the range counts whole.
     ("Watchlist domains queried", "short", "table",
      ['sum by (namespace, workload, pod, list, qname) ((sockscope_dns_watchlist_queries_total{$sel} '
       'unless sockscope_dns_watchlist_queries_total{$sel} offset $__range) '
       'or increase(sockscope_dns_watchlist_queries_total{$sel}[$__range])) > 0'],
      "Queries for names on a configured domain watchlist during the range, per pod and list; every query counts. "
      "SockscopeWatchlistDomainQueried fires on each (critical).")],
])

USE_CASES = dashboard("sockscope-use-cases", "sockscope / Use cases",
    "Shared databases, hairpin traffic, the clients of an endpoint, and traffic that bypasses a mesh sidecar.", [
    [("Databases shared by several namespaces", "short", "table",
      ['count by (remote_namespace, remote_workload, port) (sum by (namespace, remote_namespace, remote_workload, port) (increase(sockscope_tcp_connections_opened_total{cluster=~"$cluster", role="client", port=~"' + DB_PORTS + '"}[$__range])) > 0) > 1'],
      "Database endpoints (well-known ports) that clients from more than one namespace connect to; value = number of namespaces."),
     ("Clients of shared databases", "short", "table",
      ['sum by (namespace, workload, remote_namespace, remote_workload, remote_host, port) (increase(sockscope_tcp_connections_opened_total{cluster=~"$cluster", role="client", port=~"' + DB_PORTS + '"}[$__range]))'],
      "Every client of a database port, with its namespace.")],
    [("Hairpin traffic: our public names reached from inside", "short", "table",
      ['sum by (namespace, workload, remote_host, port) (increase(sockscope_tcp_connections_opened_total{$sel, role="client", remote_class="public", remote_host=~"$own_hosts"}[$__range]))'],
      "Workloads connecting to the public names listed in the 'Own public hosts' variable, through public addresses.")],
    [("Clients of an endpoint (connections over the range)", "short", "table",
      ['sum by (namespace, workload, remote_host, remote_workload, port) (increase(sockscope_tcp_connections_opened_total{cluster=~"$cluster", role="client", remote_host=~"$endpoint"}[$__range]))'],
      "Who still talks to the endpoint named in the 'Endpoint' variable (for service-discovery migrations)."),
     ("Connections/s to the endpoint", "ops", "timeseries",
      ['sum by (namespace, workload) (rate(sockscope_tcp_connections_opened_total{cluster=~"$cluster", role="client", remote_host=~"$endpoint"}[$__rate_interval]))'],
      "Connection rate to the endpoint, per client workload.")],
    [("Sidecar bypass: connections/s not through the mesh proxy", "ops", "timeseries",
      ['pod:sockscope_sidecar_bypass_connections:rate5m{$sel}'],
      "Per pod that runs a mesh sidecar (istio-proxy, linkerd-proxy): TCP connections/s its other containers opened "
      "to non-loopback peers that the sidecar did not accept on its outbound capture port (15001 Istio, 4140 Linkerd), "
      "so that left the pod without the proxy. From the recording rule in alerts/sockscope.rules.yml, where the "
      "container names and ports are set; SockscopeSidecarBypass fires over 0.01/s for 10 minutes.",
      "{{namespace}}/{{pod}}"),
     ("Sidecar bypass: UDP bytes/s outside the mesh (DNS left out)", "Bps", "timeseries",
      ['pod:sockscope_sidecar_bypass_udp_sent_bytes:rate5m{$sel}'],
      "UDP the same pods' other containers send to non-loopback peers, DNS (port 53) left out. Meshes carry no UDP, "
      "so this passes the proxy by design (metrics, syslog, QUIC) and is not alerted; UDP to public peers escapes "
      "the mesh's egress policy all the same.",
      "{{namespace}}/{{pod}}")],
], extra_vars=[
    {"name": "own_hosts", "label": "Own public hosts (regex)", "type": "textbox",
     "query": "(.+\\\\.)?example\\\\.com", "current": {"text": "(.+\\\\.)?example\\\\.com", "value": "(.+\\\\.)?example\\\\.com"}},
    {"name": "endpoint", "label": "Endpoint (remote_host regex)", "type": "textbox",
     "query": "old-discovery\\\\..*", "current": {"text": "old-discovery\\\\..*", "value": "old-discovery\\\\..*"}},
])

HEALTH = dashboard("sockscope-health", "sockscope / Health",
    "The agent itself: programs, maps, lost events, budgets, drains, scrapes, Kubernetes, OTLP; and the node's packet drops.", [
    [("Programs attached", "short", "table",
      ['min by (instance, program) (sockscope_bpf_program_attached{cluster=~"$cluster"})'],
      "1 = attached; 0 = refused by the verifier or hook missing (see the agent's log)."),
     ("Map fill", "percentunit", "timeseries",
      ['max by (map) (sockscope_bpf_map_entries{cluster=~"$cluster"} / sockscope_bpf_map_capacity{cluster=~"$cluster"})'],
      "Entries at the last drain over capacity, worst node.", "{{map}}")],
    [("Lost events/s", "ops", "timeseries",
      ['sum by (source) (rate(sockscope_events_lost_total{cluster=~"$cluster"}[$__rate_interval]))'],
      "Counts the agent could not record, by cause.", "{{source}}"),
     ("Updates folded into overflow/s", "ops", "timeseries",
      ['sum by (source) (rate(sockscope_events_folded_total{cluster=~"$cluster"}[$__rate_interval]))'],
      "Kernel updates kept without their peer (remote_class=~overflow) or owner (workload=~overflow): counts exact, detail lost. "
      "*_alloc_failed: a burst of new keys outran the kernel's entry caches; timing_folded: TCP timing samples into the node-wide "
      "histogram; drop_map_full: packet drops into the node's count.", "{{source}}"),
     ("Series folded into ~other/s", "ops", "timeseries",
      ['sum by (metric, label) (rate(sockscope_series_overflow_total{cluster=~"$cluster"}[$__rate_interval]))'],
      "Samples over a per-workload budget.", "{{metric}} {{label}}")],
    [("Time since the last drain", "s", "timeseries",
      ['max by (instance) (time() - sockscope_last_drain_timestamp_seconds{cluster=~"$cluster"})'],
      "Age of the numbers each agent serves: about one interval when healthy; /healthz fails past 3 intervals + 2s.", "{{instance}}"),
     ("Drain duration p99", "s", "timeseries",
      ['histogram_quantile(0.99, sum by (le, instance) (rate(sockscope_drain_duration_seconds_bucket{cluster=~"$cluster"}[$__rate_interval])))'],
      "Time to read the kernel maps and fold the deltas.", "{{instance}}"),
     ("Scrape duration", "s", "timeseries",
      ['max by (instance) (scrape_duration_seconds{cluster=~"$cluster", job=~".*sockscope.*"})'],
      "Prometheus's own measurement of each scrape of sockscope.", "{{instance}}"),
     ("Agents up", "short", "stat",
      ['sum(up{cluster=~"$cluster", job=~".*sockscope.*"})'],
      "Agents Prometheus scrapes successfully.", "up")],
    [("Kubernetes API watches up", "short", "timeseries",
      ['min by (instance) (sockscope_kubernetes_up{cluster=~"$cluster"})'],
      "1 when every watch streams (absent off Kubernetes).", "{{instance}}"),
     ("OTLP exports and failures/s", "ops", "timeseries",
      [('sum(rate(sockscope_otlp_exports_total{cluster=~"$cluster"}[$__rate_interval]))', "delivered"),
       ('sum by (reason) (rate(sockscope_otlp_export_failures_total{cluster=~"$cluster"}[$__rate_interval]))', "failed: {{reason}}")],
      "Deliveries to the collector, and failed attempts by reason (absent without OTLP).")],
    [("Node packet drops/s by reason", "pps", "timeseries",
      ['sum by (instance, reason, direction) (rate(sockscope_packet_drops_total{cluster=~"$cluster", workload="", pod=""}[$__rate_interval]))'],
      "Packets the kernel dropped that belonged to no workload's socket (e.g. NO_SOCKET: to a closed port; "
      "NOT_SPECIFIED: a kernel path that names no reason), by node, reason and direction; "
      "drops folded when the drop map was full count here too (drop_map_full). SockscopePacketDropsHigh "
      "fires for a node only on reasons that mean it lost traffic (full queues or memory, neighbours, routes).",
      "{{instance}} {{reason}} {{direction}}"),
     ("TCP resets/s by node", "ops", "timeseries",
      ['sum by (instance, direction) (rate(sockscope_tcp_resets_total{cluster=~"$cluster"}[$__rate_interval]))'],
      "Resets on the tracked connections of each node, sent and received. Many workloads' connections reset "
      "at once on one node point at the node or its path (a conntrack table or NAT that forgot them, a middlebox) "
      "rather than at a workload; per workload on the Overview.",
      "{{instance}} {{direction}}")],
])

OUT = sys.argv[1] if len(sys.argv) > 1 else HERE
for name, d in [("overview", OVERVIEW), ("dependencies", DEPENDENCIES), ("dns", DNS),
                ("use-cases", USE_CASES), ("health", HEALTH)]:
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
