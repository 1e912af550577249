//! The command line: one file per command group. Each command returns its exit code or an
//! `anyhow` error that `main` prints as one line with exit code 2.

mod admin;
mod cert;
mod credential;
mod generate;
/// The hub client, where the admin commands first had it.
pub use crate::client;
pub mod hub;
mod job;
mod logging;
mod node;
mod release;
mod service;

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
    /// Set, list and delete a gateway's data-store credentials from any machine (the
    /// credential manager): values are sealed here for each node, the hub sees only ciphertext.
    #[command(subcommand)]
    Credential(credential::CredentialCommand),
    /// Submit jobs to a gateway through the hub and follow their runs.
    #[command(subcommand, after_help = admin::EXIT_CODES)]
    Job(job::JobCommand),
    /// Make the key pair that signs releases, and sign release files (for `node update`).
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Open the Configuration Manager window (the default with no command).
    Gui,
    /// Write man pages or shell completions into a folder (used by the package build).
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

/// The certificates of a `--roots PEM` argument, none without one.
fn roots_arg(path: Option<&std::path::Path>) -> anyhow::Result<Vec<Vec<u8>>> {
    use anyhow::Context as _;
    path.map_or_else(
        || Ok(Vec::new()),
        |path| crate::cert::read_roots(path).with_context(|| format!("reading --roots {}", path.display())),
    )
}

/// The first line of standard input without its line ending: how secrets (keys, passwords,
/// credential values) reach a command without showing in the process list. Reads no further,
/// so a caller may keep stdin open.
fn stdin_line(what: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading {what} from standard input"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `node run` and the window install their own logging, with a file and a level that can
    // change.
    if !matches!(
        cli.command,
        Some(Command::Node(node::NodeCommand::Run { .. } | node::NodeCommand::UpdateWatchdog) | Command::Gui)
            | None
    ) {
        logging::init(None, "info");
    }
    // reqwest and the hub use rustls without a built-in crypto provider; pick ring, once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Some(Command::Cert(command)) => cert::run(command),
        Some(Command::Hub(command)) => hub::run(command),
        Some(Command::Node(command)) => node::run(command),
        Some(Command::Job(command)) => job::run(command),
        Some(Command::Credential(command)) => credential::run(command),
        Some(Command::Generate(command)) => generate::run(command),
        Some(Command::Release(command)) => release::run(command),
        Some(Command::Gui) | None => {
            let dir = crate::paths::data_dir();
            let store = crate::node::store::Store::new(&dir);
            // Owner-only before anything (logs, the embedded hub) is written into it.
            store.ensure_dir()?;
            let level = store.settings().map_or_else(|_| "info".to_owned(), |s| s.log_level);
            let feed = crate::node::logs::LogFeed::new(1_000);
            let control = logging::init_with_feed(Some(&dir.join("logs")), &level, Some(&feed));
            let set_level = Box::new(move |level: &str| control.set_level(level));
            crate::gui::run(crate::gui::Logging { feed, set_level })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
