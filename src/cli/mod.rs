//! The command line: one file per command group. Each command returns its exit code or an
//! `anyhow` error that `main` prints as one line with exit code 2.

mod admin;
mod cert;
/// The hub client, where the admin commands first had it.
pub use crate::client;
pub mod hub;
mod job;
mod node;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Gatehouse: a self-hosted data gateway. With no command, opens the Configuration Manager.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check certificates for the encrypted peer channel.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Run and administer the hub (control plane).
    #[command(subcommand)]
    Hub(hub::HubCommand),
    /// Register and run this machine's node service.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Submit jobs to a gateway through the hub and follow their runs.
    #[command(subcommand, after_help = admin::EXIT_CODES)]
    Job(job::JobCommand),
    /// Open the Configuration Manager window (the default with no command).
    Gui,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging();
    // reqwest and the hub use rustls without a built-in crypto provider; pick ring, once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Some(Command::Cert(command)) => cert::run(command),
        Some(Command::Hub(command)) => hub::run(command),
        Some(Command::Node(command)) => node::run(command),
        Some(Command::Job(command)) => job::run(command),
        Some(Command::Gui) | None => {
            crate::gui::run()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs go to stderr; `GATEHOUSE_LOG` sets the filter (e.g. `debug`, `gatehouse=trace`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
