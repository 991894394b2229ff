use std::{io::Write, process::ExitCode};

use sockscope::config::Config;
use tracing_subscriber::EnvFilter;

/// Exit code after a panic (EX_SOFTWARE, sysexits.h).
const PANIC_EXIT: i32 = 70;

/// A panic on any thread ends the process: a drain thread or watch task that died would leave
/// the agent serving its last numbers forever, its programs detached. Dying instead lets the
/// kubelet or systemd restart it. Immediately (`_exit`, no destructors, no other thread runs
/// on): the kernel detaches the programs when the process's link fds close.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            "panic: {info}; exiting so the agent is restarted"
        );
        default(info);
        // SAFETY: _exit(2) ends the process without running anything else.
        unsafe { libc::_exit(PANIC_EXIT) };
    }));
}

/// `sockscope policy` / `sockscope egress`: no privileges, no kernel programs, one thread.
fn run_command(command: sockscope::config::tools::Command) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn,kube_client=error"))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockscope: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sockscope::advice::run(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sockscope: {}", sockscope::report::error_chain(&e));
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sockscope: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(command) = config.command.clone() {
        return run_command(command);
    }
    if let Some(path) = &config.install_seccomp_profile {
        return match sockscope::seccomp::install(path) {
            Ok(()) => {
                let _ = writeln!(std::io::stdout(), "{}: installed", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sockscope: {}", sockscope::report::error_chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    if let Some(path) = &config.check_config {
        if let Err(e) = sockscope::agent::domains(&config) {
            eprintln!(
                "sockscope: config {}: {}",
                path.display(),
                sockscope::report::error_chain(&e)
            );
            return ExitCode::from(2);
        }
        // The command's result, not a log line.
        let _ = writeln!(std::io::stdout(), "{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    // kube's client logs a response it cannot decode whole, at warn: up to the 16 MiB a
    // response may have. sockscope logs the error itself, in one line.
    let directives = if config.log.contains("kube") {
        config.log.clone()
    } else {
        format!("{},kube_client=error", config.log)
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!(
            "sockscope: invalid --log filter {:?} ({e}); using info",
            config.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a terminal, not in journald or container logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    exit_on_panic();

    // Before the runtime's threads exist: capabilities dropped here are dropped for all.
    let started = match sockscope::agent::start(&config) {
        Ok(s) => s,
        Err(e) => {
            // With every cause: "failed to create map X" alone does not say the kernel (or a
            // seccomp profile) refused bpf(2).
            tracing::error!("{}", sockscope::report::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockscope: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sockscope::agent::run(config, started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", sockscope::report::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
