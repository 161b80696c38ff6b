//! Tessera: a multi-raft, region-sharded, transactional key-value store.
//!
//! This package holds the binaries (`tessera-server`, `tessera-scheduler`, `tessera-ctl`,
//! `tessera-bench`, `tessera-chaos`) and the few process helpers they share (a fail-stop panic
//! hook, logging, the stop signals). The server lives in the `server` crate, the clients in
//! `tessera-client`, the bank workload in `workload`, the local cluster and the chaos harness in
//! `harness`.

#![deny(missing_docs)]

/// Makes any panic, on any thread, stop the whole process: the panic is reported as usual
/// (message, location, backtrace if enabled), a last line says the process is stopping, and the
/// process aborts (SIGABRT, a non-zero exit). A store must never go on with one thread dead —
/// say its raft worker — while the others keep answering: that is a zombie neither clients nor
/// the scheduler can tell apart from a live store. Aborting runs no destructors and no exit
/// handlers, so nothing else gets written; what was acknowledged was already durable.
pub fn install_fail_stop_hook(process: &'static str) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        eprintln!("{process}: fatal: thread '{name}' panicked; stopping the process");
        tracing::error!(thread = name, "fatal panic; aborting the process");
        std::process::abort();
    }));
}

/// Installs the tracing subscriber: `RUST_LOG` if set, else `default_filter`.
pub fn init_tracing(default_filter: &str) {
    init_tracing_as(default_filter, false);
}

/// [`init_tracing`], with each line a JSON object when `json` (for log collectors).
pub fn init_tracing_as(default_filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
///
/// # Errors
/// When a signal handler cannot be installed.
pub async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use anyhow::Context;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; Ok("SIGINT") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}
