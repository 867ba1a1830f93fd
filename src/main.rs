//! `cutover serve`: the proxy process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use cutover::config::{Config, Coordination, Overrides};
use cutover::control::{ControlPlane, ValidationService};
use cutover::listener::Listener;
use cutover::pattern::PatternHandle;
use cutover::stats::DataPathStats;

#[derive(Parser)]
#[command(
    name = "cutover",
    version = cutover::build_info::VERSION,
    about = "MySQL proxy for zero-downtime database migration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (MySQL listener + admin API).
    Serve {
        /// Configuration file (TOML).
        #[arg(long, default_value = "./cutover.toml", env = "CUTOVER_CONFIG")]
        config: PathBuf,
        /// MySQL listener address, e.g. 127.0.0.1:6033.
        #[arg(long, env = "CUTOVER_LISTEN")]
        listen: Option<String>,
        /// Admin HTTP address, e.g. 127.0.0.1:9033.
        #[arg(long, env = "CUTOVER_ADMIN_LISTEN")]
        admin_listen: Option<String>,
        /// Source database URL (mysql://user:pass@host:port/db).
        #[arg(long, env = "CUTOVER_SOURCE")]
        source: Option<String>,
        /// Destination database URL.
        #[arg(long, env = "CUTOVER_DESTINATION")]
        destination: Option<String>,
        /// Admin API bearer token (prefer the environment variable: flags show in `ps`).
        #[arg(long, env = "CUTOVER_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Start as a fresh install although the state file is missing and
        /// data_dir shows an earlier migration (which is otherwise refused).
        #[arg(long)]
        init_state: bool,
        #[command(flatten)]
        coordination: cutover::config::CoordinationOverrides,
    },
    /// Compare source and destination (one-shot); exit 0 consistent, 1 differences remain.
    Validate {
        /// Configuration file (TOML).
        #[arg(long, default_value = "./cutover.toml", env = "CUTOVER_CONFIG")]
        config: PathBuf,
        /// Validate only this table (repeatable).
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Incremental: rows whose update time (ms since the epoch) is at or after this.
        #[arg(long)]
        since: Option<i64>,
        /// Repair what differs (the target is made equal to the base).
        #[arg(long)]
        fix: bool,
        /// Which side is authoritative when no migration state exists yet
        /// (the persisted state decides otherwise; a contradiction is refused).
        #[arg(long)]
        pattern: Option<cutover::pattern::Pattern>,
    },
    /// Drive a running server through its admin API (status, switch, validate, fix, …).
    Ctl(cutover::ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cutover::logging::init() {
        eprintln!("cutover: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Ctl(args) => ExitCode::from(cutover::ctl::main(args)),
        Command::Validate {
            config,
            tables,
            since,
            fix,
            pattern,
        } => ExitCode::from(cutover::validate::cli::main(
            cutover::validate::cli::ValidateArgs {
                config,
                tables,
                since,
                fix,
                pattern,
            },
        )),
        Command::Serve {
            config,
            listen,
            admin_listen,
            source,
            destination,
            admin_token,
            init_state,
            coordination,
        } => {
            let overrides = Overrides {
                listen,
                admin_listen,
                source,
                destination,
                admin_token,
                init_state,
                coordination,
            };
            let cfg = match Config::load(&config, &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("cutover: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cutover: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cutover: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What `serve` stops at the end besides the proxy and the admin API.
enum Fleet {
    /// The file-backed default: this process's own validator (its change
    /// capture checkpoint is saved on shutdown).
    No(Arc<cutover::validate::Validator>),
    /// A fleet member: it leaves the fleet (its leader validation stops with it).
    Member(Arc<cutover::control::fleet::Fleet>),
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        signal.cancel();
    });
    // The migration state decides the starting pattern: the state file, or
    // the fleet's state in etcd (read before anything is served).
    let (control, pattern, fleet) = match &cfg.coordination {
        Coordination::File => {
            let (control, initial) = ControlPlane::load(&cfg)?;
            let pattern = PatternHandle::new(initial);
            let validator = cutover::validate::Validator::new(cfg.clone(), pattern.clone())
                .context("cannot open the validation event store (data_dir)")?;
            let validator = Arc::new(validator);
            if cfg.validation.change_capture == cutover::config::ChangeCapture::Binlog {
                // Before the proxy accepts clients: every change from here on is seen.
                validator
                    .start_change_capture()
                    .await
                    .context("[validation] change_capture = \"binlog\"")?;
            }
            let service = Arc::clone(&validator) as Arc<dyn ValidationService>;
            (
                control.with_validation(service),
                pattern,
                Fleet::No(validator),
            )
        }
        Coordination::Etcd(_) => {
            let (control, pattern, fleet) = ControlPlane::join_fleet(&cfg, shutdown.clone())
                .await
                .context("cannot join the fleet")?;
            let validation = fleet.validation(cfg.clone());
            (
                control.with_validation(validation),
                pattern,
                Fleet::Member(fleet),
            )
        }
    };
    let stats = DataPathStats::new();
    let listener = Listener::bind(cfg.clone(), pattern.clone(), stats.clone())
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let admin = tokio::net::TcpListener::bind(&cfg.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin_listen)", cfg.admin_listen))?;
    listener.probe_backends().await;
    tokio::spawn(cutover::tls::server::reload_on_sighup(listener.tls()));
    tracing::info!(pattern = %pattern.load(), state = ?control.state(), admin = %cfg.admin_listen, "cutover started");

    let admin_task = tokio::spawn(control.serve(
        admin,
        pattern.clone(),
        stats.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    listener.run(shutdown).await;
    match admin_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("admin API stopped with an error: {e}"),
        Err(e) => tracing::warn!("admin API task failed: {e}"),
    }
    match fleet {
        Fleet::No(validator) => validator.shutdown().await, // saves the capture checkpoint
        Fleet::Member(fleet) => fleet.leave().await,
    }
    tracing::info!("bye");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
