//! Wiring: preflight -> load/attach -> drain loop -> HTTP; shutdown on SIGTERM/SIGINT.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Instant,
};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    config::Config,
    dns::{Answers, spawn_reader},
    drain::Drainer,
    ebpf::{Kernel, KernelOptions, MapSizes, preflight, privileges},
    error::{Error, Result},
    export::{
        otlp,
        prometheus::{Heartbeat, Shared, router},
        text::Exposition,
        web::{self, WebOptions},
    },
    fault::{self, Fault},
    identity::domains::{DomainClasses, Watchlists},
    identity::labelled::Labeller,
    identity::labels::LabelOptions,
    identity::{Identity, hosts::HostCache},
    kubernetes::Cluster,
    pipeline::Pipeline,
    series::{Budgets, Series, dns::Domains},
};

/// Longest wait for the first list of this node's pods before draining starts.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the privileged start leaves for the rest of the agent.
pub struct Started {
    root: preflight::CgroupRoot,
    listener: std::net::TcpListener,
    kernel: Kernel,
    maps: crate::ebpf::Maps,
    kubernetes: Option<(crate::kubernetes::Source, String)>,
    web: WebOptions,
    otlp: Option<otlp::Options>,
    domains: Domains,
    at: std::time::SystemTime,
}

/// The name classes and watchlists the config describes; the watchlist files are read here,
/// so a missing or malformed one stops the agent (and --check-config) with its line.
pub fn domains(config: &Config) -> Result<Domains> {
    let search = match &config.dns_search_domains {
        Some(list) => list.clone(),
        // The resolver's own search list: in a pod (or with hostNetwork and
        // ClusterFirstWithHostNet) the cluster's, on a plain host the host's.
        None => std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| crate::identity::domains::resolv_conf_search(&t))
            .unwrap_or_default(),
    };
    let classes = DomainClasses::new(
        &config.dns_cluster_domain,
        &search,
        &config.dns_domain_classes,
    )?;
    let watchlists = Watchlists::load(&config.dns_watchlists)?;
    Ok(Domains {
        classes,
        watchlists,
    })
}

/// The map sizes the flags ask for, `auto` ones for this node's possible CPUs.
fn sizes(config: &Config) -> MapSizes {
    use crate::config::Entries;
    let n = |e: Entries| match e {
        Entries::Auto => None,
        Entries::Exactly(n) => Some(n),
    };
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    MapSizes::resolve(
        n(config.flow_map_size),
        n(config.max_flows_per_cgroup),
        n(config.dns_map_size),
        n(config.max_dns_keys_per_cgroup),
        n(config.overflow_map_size),
        cpus,
    )
}

/// The privileged part, on the main thread before any other thread exists: checks, the
/// listener, loading and attaching, then dropping the capabilities nothing needs any more
/// (capabilities are per thread; threads started later inherit the reduced set).
pub fn start(config: &Config) -> Result<Started> {
    let at = std::time::SystemTime::now();
    crate::config::check(config).map_err(Error::Config)?;
    crate::fault::arm(crate::fault::parse(&config.faults).map_err(Error::Config)?);
    let otlp = otlp::Options::resolve(&config.otlp_settings()).map_err(Error::Config)?;
    preflight::check_privileges()?;
    preflight::check_btf()?;
    let root = preflight::cgroup_root(config.cgroup_root.as_deref())?;
    let domains = domains(config)?;

    // Bind before attaching: a port conflict should fail before anything touches the kernel.
    let listen = |source| Error::Listen {
        address: config.listen_address.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(config.listen_address).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;

    let web = match &config.web_config_file {
        Some(path) => web::load(
            path,
            config.web_max_requests as usize,
            config.web_max_connections as usize,
            config.web_timeout,
        )?,
        None => WebOptions {
            tls: None,
            users: Default::default(),
            max_requests: config.web_max_requests as usize,
            max_connections: config.web_max_connections as usize,
            timeout: config.web_timeout,
        },
    };

    // Kubernetes settings before the kernel too: a bad kubeconfig fails before anything
    // attaches.
    let kubernetes = if config.kubernetes_on() {
        let node = config.node().ok_or(crate::kubernetes::Error::NoNodeName)?;
        Some((
            crate::kubernetes::source(config.kubeconfig.as_deref())?,
            node,
        ))
    } else {
        None
    };

    let sizes = sizes(config);
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    info!(
        flows = sizes.flows,
        flows_per_cgroup = sizes.flows_per_cgroup,
        dns = sizes.dns,
        dns_per_cgroup = sizes.dns_per_cgroup,
        overflow = sizes.overflow,
        cpus,
        full_mib = sizes.full_bytes(cpus) >> 20,
        "kernel map sizes (full_mib: their kernel memory were every entry taken)"
    );
    let (kernel, maps) = Kernel::load_and_attach(
        &root,
        KernelOptions {
            process_label: config.label_process,
            dns_timeout: config.dns_timeout,
            sizes,
            tcp: config.tcp_accounting,
        },
    )?;
    if config.keep_capabilities {
        info!("keeping every capability (--keep-capabilities)");
    } else {
        let before = privileges::effective().unwrap_or_default();
        let reduced = privileges::reduce_to(privileges::KEEP)?;
        let dropped: caps::CapsHashSet = before.difference(&reduced.effective).copied().collect();
        info!(
            dropped = ?privileges::names(&dropped),
            kept = ?privileges::names(&reduced.effective),
            "programs attached: capabilities dropped"
        );
        if let Some(e) = reduced.bounding {
            warn!(
                "capabilities stay in the bounding set ({e}: dropping them needs CAP_SETPCAP); \
                 the effective, permitted, inheritable and ambient sets are empty of them and \
                 no_new_privs is set, so no exec can regain them"
            );
        }
    }
    // Even with every capability kept: the agent never execs, and nothing it could exec
    // should gain privileges.
    privileges::no_new_privs()?;
    Ok(Started {
        root,
        listener,
        kernel,
        maps,
        kubernetes,
        web,
        otlp,
        domains,
        at,
    })
}

/// Runs the agent until SIGTERM or SIGINT, then detaches, drains one last time and returns.
pub async fn run(config: Config, started: Started) -> Result<()> {
    let Started {
        root,
        listener,
        kernel,
        mut maps,
        kubernetes,
        web,
        otlp,
        domains,
        at,
    } = started;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| Error::Listen {
        address: config.listen_address.to_string(),
        source,
    })?;
    let cluster = match kubernetes {
        Some((source, node)) => {
            let client = crate::kubernetes::client(source, config.kubernetes_timeout).await?;
            let cluster = Arc::new(Cluster::default());
            cluster.spawn(
                client,
                &crate::kubernetes::Options {
                    node_name: node.clone(),
                    remote_index: config.remote_index,
                    timeout: config.kubernetes_timeout,
                },
            );
            info!(node = %node, remote_index = config.remote_index, "watching the Kubernetes API");
            Some(cluster)
        }
        None => None,
    };
    let shared = Arc::new(Shared::new(
        crate::export::prometheus::stale_after(config.interval),
        SYNC_WAIT,
    ));
    let mut series = Series::new(
        Budgets {
            qnames: config.max_qnames_per_workload as usize,
            qtypes: config.max_qtypes_per_workload as usize,
            remote_hosts: config.max_remote_hosts_per_workload as usize,
            ports: config.max_ports_per_workload as usize,
            processes: config.max_processes_per_workload as usize,
            remote_ips: config.max_remote_ips_per_workload as usize,
        },
        config.series_expiry,
        cluster.as_ref(),
    );
    let drops = crate::series::drop::Drops::new(&config.drop_labels);
    series.flows.set_drops(drops.clone());
    series.packet_drops.set_drops(drops.clone());
    series.dns.set_drops(drops);
    series.dns.set_domains(domains);
    series
        .agent
        .set_attached(kernel.programs.iter().map(|p| (p.name, p.attached)));
    for (name, size) in sizes(&config).maps() {
        series.agent.set_map_capacity(name, size);
    }
    series.agent.set_interval(config.interval);
    series.agent.set_map_capacity(
        sockscope_common::dns::DNS_PENDING_MAP,
        sockscope_common::dns::DNS_PENDING_SLOTS,
    );
    if let Some(options) = otlp {
        let stats = Arc::new(otlp::Stats::default());
        series
            .agent
            .enable_otlp(&mut series.registry, stats.clone());
        // A thread and runtime of its own: parsing, encoding and gzip of a large request take
        // tens to hundreds of ms of CPU in one poll, and on the shared runtime a scrape queued
        // behind them waited as long (scrape p99 5 ms -> 350 ms at 50k series with gzip).
        let shared = shared.clone();
        thread::Builder::new()
            .name("otlp".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(otlp::run(options, shared, stats, at)),
                    Err(e) => error!("OTLP export off: no runtime for it: {e}"),
                }
            })
            .map_err(|source| Error::Thread {
                name: "otlp",
                source,
            })?;
    }
    shared.publish(Exposition::new(series.registry.snapshot()));
    // Loading the object file and the kernel's BTF took tens of MB, all freed by now.
    crate::memory::release_freed_memory();

    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let mut identity = Identity::new(
        root.mount.clone(),
        root.attach.clone(),
        maps.cgroup_netns.take(),
        HostCache::with_bytes(
            config.dns_cache_size as usize,
            usize::try_from(config.dns_cache_memory).unwrap_or(usize::MAX),
            config.dns_ttl_min,
            config.dns_ttl_max,
        ),
    );
    if let Some(c) = &cluster {
        identity = identity.with_cluster(c.clone());
    }
    let identity = identity.with_classes(config.remote_classes.clone());
    let identity = Arc::new(parking_lot::Mutex::new(identity));
    let answers = maps
        .dns_answers
        .take()
        .map(|ring| Arc::new(Answers::new(ring, identity.clone())));
    let reader_stop = Arc::new(AtomicBool::new(false));
    if let Some(a) = &answers {
        let a = a.clone();
        shared.watch(Heartbeat {
            name: "the DNS answer reader",
            since: Box::new(move || a.since_heartbeat()),
            // It wakes every 200ms; a starved thread on a busy node gets far more than this.
            limit: crate::dns::POLL * 10 + crate::export::prometheus::STALE_MARGIN,
        });
    }
    let reader = match &answers {
        Some(a) => Some(
            spawn_reader(a.clone(), reader_stop.clone()).map_err(|source| Error::Thread {
                name: "dns-answers",
                source,
            })?,
        ),
        None => None,
    };
    let tls = web.tls.is_some();
    let server = tokio::spawn(web::serve(
        listener,
        router(shared.clone()),
        web,
        series.agent.web_counters(),
    ));
    // The first drain waits (briefly) for this node's pods, so it does not label every pod
    // from its cgroup path alone; the kernel keeps counting meanwhile.
    if let Some(c) = &cluster
        && !c.wait_synced(SYNC_WAIT).await
    {
        warn!(
            "this node's pods are not listed after {SYNC_WAIT:?}; labelling pods from cgroup paths until they are"
        );
    }
    let drain_shared = shared.clone();
    let interval = config.interval;
    let drainer = Drainer::new(maps, config.dns_timeout);
    let mut labeller = Labeller::new(LabelOptions {
        process: config.label_process,
        remote_ip: config.label_remote_ip,
    });
    labeller.set_sticky_for(config.dns_ttl_max);
    labeller.set_drop_reasons(kernel.drop_reasons.clone());
    let pipeline = Pipeline {
        kernel,
        drainer,
        identity,
        answers,
        labeller,
        series,
        shared: drain_shared,
        grace: config.series_expiry,
    };
    let drain_thread = thread::Builder::new()
        .name("drain".into())
        .spawn(move || drain_loop(pipeline, interval, stop_rx))
        .map_err(|source| Error::Thread {
            name: "drain",
            source,
        })?;

    info!(address = %config.listen_address, tls, interval = ?config.interval, cgroup = %root.attach.display(), "sockscope running");

    wait_for_signal().await;
    info!("shutting down: detaching programs and draining");
    shared.set_ready(false);
    let _ = stop_tx.send(());
    let joined = tokio::task::spawn_blocking(move || drain_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        error!("drain thread ended abnormally");
    }
    reader_stop.store(true, Ordering::Relaxed);
    if let Some(r) = reader
        && r.join().is_err()
    {
        error!("DNS answer thread ended abnormally");
    }
    server.abort();
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot listen for SIGTERM: {e}; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs a tick every `interval` until asked to stop, then the final drain.
fn drain_loop(mut pipeline: Pipeline, interval: std::time::Duration, stop: mpsc::Receiver<()>) {
    pipeline.identity.lock().cgroups.scan();
    // The first drain runs right away so /readyz turns ready without waiting one interval.
    let mut next = Instant::now();
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Stop requested, or the sender is gone (main is exiting): final drain.
            _ => break,
        }
        next += interval;
        if next < Instant::now() {
            // A drain took longer than the interval: skip missed ticks instead of bursting.
            next = Instant::now() + interval;
        }
        if fault::fires(Fault::DrainPanic) {
            panic!("injected fault: drain-panic");
        }
        while fault::fires(Fault::DrainPause) {
            thread::sleep(std::time::Duration::from_millis(20));
        }
        if fault::fires(Fault::DrainStall) {
            warn!("injected fault: drain-stall; the drain stops here");
            loop {
                thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        pipeline.tick();
    }
    pipeline.finish();
}
