//! Wiring: preflight -> load/attach -> drain loop -> HTTP; shutdown on SIGTERM/SIGINT.

use std::{
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use crate::{
    config::Config,
    drain::Drainer,
    ebpf::{Kernel, KernelOptions, preflight},
    error::{Error, Result},
    export::{
        format::render,
        prometheus::{Shared, router},
    },
    identity::cgroup::Resolver,
    series::{Series, labels::LabelOptions},
};

/// Runs the agent until SIGTERM or SIGINT, then detaches, drains one last time and returns.
pub async fn run(config: Config) -> Result<()> {
    preflight::check_privileges()?;
    preflight::check_btf()?;
    let root = preflight::cgroup_root(config.cgroup_root.as_deref())?;

    // Bind before attaching: a port conflict should fail before anything touches the kernel.
    let listener = tokio::net::TcpListener::bind(config.listen_address)
        .await
        .map_err(|source| Error::Listen {
            address: config.listen_address.to_string(),
            source,
        })?;

    let (kernel, maps) = Kernel::load_and_attach(
        &root,
        KernelOptions {
            process_label: config.label_process,
        },
    )?;
    let shared = Arc::new(Shared::default());
    let series = Series::new(LabelOptions {
        process: config.label_process,
        remote_ip: config.label_remote_ip,
    });
    series
        .agent
        .set_attached(kernel.programs.iter().map(|p| (p.name, p.attached)));
    for name in sockscope_common::FLOW_MAP_NAMES {
        series
            .agent
            .set_map_capacity(name, sockscope_common::FLOW_MAP_CAPACITY);
    }
    shared.publish(render(&series.registry));

    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let resolver = Resolver::new(
        root.mount.clone(),
        root.attach.clone(),
        Duration::from_secs(1),
    );
    let drain_shared = shared.clone();
    let interval = config.interval;
    let drain_thread = thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            drain_loop(
                kernel,
                Drainer::new(maps),
                series,
                resolver,
                drain_shared,
                interval,
                stop_rx,
            )
        })
        .map_err(|source| Error::Read {
            path: "drain thread".into(),
            source,
        })?;

    let app = router(shared.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!("HTTP server stopped: {e}");
        }
    });
    info!(address = %config.listen_address, interval = ?config.interval, cgroup = %root.attach.display(), "sockscope running");

    wait_for_signal().await;
    info!("shutting down: detaching programs and draining");
    shared.set_ready(false);
    let _ = stop_tx.send(());
    let joined = tokio::task::spawn_blocking(move || drain_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        error!("drain thread ended abnormally");
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

fn drain_loop(
    mut kernel: Kernel,
    mut drainer: Drainer,
    mut series: Series,
    mut resolver: Resolver,
    shared: Arc<Shared>,
    interval: Duration,
    stop: mpsc::Receiver<()>,
) {
    resolver.scan();
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
        let start = Instant::now();
        let batch = drainer.drain();
        series.flows.fold(&batch.flows, &mut resolver);
        let name = sockscope_common::FLOW_MAP_NAMES[batch.drained_generation];
        series.agent.record_drain(&batch, name, start.elapsed());
        series.agent.record_run_stats(&kernel.run_stats());
        shared.publish(render(&series.registry));
        shared.set_ready(kernel.programs.iter().any(|p| p.attached));
    }
    kernel.detach();
    series
        .agent
        .set_attached(kernel.programs.iter().map(|p| (p.name, p.attached)));
    let start = Instant::now();
    let batch = drainer.drain_all();
    series.flows.fold(&batch.flows, &mut resolver);
    series
        .agent
        .record_drain(&batch, sockscope_common::FLOW_MAP_NAMES[0], start.elapsed());
    shared.publish(render(&series.registry));
    info!(flows = batch.flows.len(), "final drain done");
}
