//! `gatehouse node …`: register this machine, run the node service headless, show its status,
//! unregister. The Configuration Manager drives the same `node` library code.

use crate::host::Host;
use crate::node::control::ControlGroup;
use crate::node::logs::LogFeed;
use crate::node::metrics::SystemMetrics;
use crate::node::store::Store;
use crate::node::{self, NodeStatus, Registration, ops};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Register this machine with a gateway, using one of the gateway's auth keys.
    Register(RegisterArgs),
    /// Run the node service in the foreground (what systemd starts).
    Run {
        /// Share the control socket (and nothing else of the data dir) with this group, whose
        /// members may then attach a window or run `node status|stop`: the system unit's
        /// `--control-group gatehouse`. A name or a gid; the service must run as a member.
        #[arg(long, env = "GATEHOUSE_CONTROL_GROUP", value_name = "GROUP")]
        control_group: Option<String>,
    },
    /// Start the node service in the background (through systemd when installed as its unit).
    Start,
    /// Stop the running node service (a window's too); its runs drain first.
    Stop,
    /// Stop the node service if it runs, then start it.
    Restart,
    /// Update the running node service to the release the hub offers: one node of the
    /// gateway at a time, it takes no new runs, lets its runs finish, installs the signed
    /// release in place of its binary (keeping the previous one), restarts into it, and goes
    /// back to the previous binary if the new one doesn't come up healthy.
    Update {
        /// Return once the update is under way instead of waiting for its outcome.
        #[arg(long)]
        no_wait: bool,
    },
    /// Let the running node service update itself, as `node update` does, when the hub offers
    /// a newer release inside a window of the machine's local time (TZ, else /etc/localtime):
    /// `--window 02:00-04:00 [--days sat,sun]`, or `off` (the default). Without arguments it
    /// shows the window. A running node follows it at its next heartbeat.
    AutoUpdate {
        /// `off`: no automatic updates.
        #[arg(value_parser = ["off"], conflicts_with_all = ["window", "days"])]
        off: Option<String>,
        /// FROM-TO in 24-hour local time, e.g. 02:00-04:00 (23:00-01:00 runs past midnight).
        #[arg(long, value_name = "HH:MM-HH:MM")]
        window: Option<String>,
        /// The days the window opens on: mon,tue,… (comma-separated), weekdays, weekend or all
        /// (the default).
        #[arg(long, value_name = "DAYS", requires = "window")]
        days: Option<String>,
    },
    /// The watchdog of an update (started by the node from its previous binary).
    #[command(hide = true)]
    UpdateWatchdog,
    /// Show this node's registration and the status of its last run.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove this node from its gateway at the hub and forget the registration here.
    Unregister,
    /// Set the log level (error, warn, info, debug, trace); a running node applies it within
    /// seconds. Logs go to stderr and to logs/ in the data dir.
    LogLevel { level: String },
    /// Serve this node's own Prometheus metrics at http://ADDR/metrics for scraping on this
    /// machine: a loopback address such as 127.0.0.1:9464 (or [::1]:9464; a bare port means
    /// 127.0.0.1), no token; `off` stops it. A running node applies it within seconds.
    SetMetrics {
        /// A loopback address and port, or `off`.
        #[arg(value_name = "ADDR|off")]
        address: String,
    },
    /// Set how many runs this node takes at once (0: the default formula,
    /// max(2, min(4 × cores, 2 × GiB RAM))). Applies when the node service starts.
    SetConcurrency { limit: u32 },
    /// Let peers reach this node on PORT; with --cert, encrypt the peer channel with that
    /// certificate (checked first; a rejected certificate is refused with its report).
    EnableRemoteAccess(RemoteAccessArgs),
    /// Stop wrapping the peer channel in TLS with the certificate; frames stay encrypted and
    /// authenticated with the nodes' own keys (the whole gateway must agree; see the hub's status).
    DisableRemoteAccess,
    /// Write this node's state (settings, tokens, key pair, credentials, certificate) to an
    /// encrypted file (owner-only, written atomically; never inside the data dir).
    Backup {
        /// The backup file to write; an existing file is refused (it may be the backup still
        /// needed) unless --force is given.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Replace a file that is at --out.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        password: BackupPassword,
    },
    /// Restore a node from a backup onto this machine (which must not be registered).
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
        #[command(flatten)]
        password: BackupPassword,
    },
    /// Data-store credentials: kept sealed on the nodes, synced between them, never sent to the hub.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Make a one-time auth key for adding a node to this node's gateway (with the hub's admin
    /// token this node holds: express setup's), and print it with the steps for the other
    /// machine. Without an admin token, it prints what the hub's admin runs instead.
    AddNodeKey {
        /// How long the key stays valid unused: up to 30d, e.g. 30m, 2h.
        #[arg(long, default_value = "30m", value_parser = super::admin::parse_lifetime, value_name = "DURATION")]
        expires: std::time::Duration,
        /// Print JSON (key, hub_url, pin, gateway, expires_ms).
        #[arg(long)]
        json: bool,
    },
    /// Who can reach this data dir's embedded hub (express setup's): `network` listens on the
    /// machine's address over HTTPS with a certificate it makes for itself, so nodes of other
    /// machines can join; `local` goes back to this machine only. This node follows the hub;
    /// a running node service is stopped and started again.
    HubAccess {
        #[arg(value_enum)]
        to: HubAccessChoice,
        /// The address to listen on with `network`: IP or IP:PORT (default: the machine's
        /// address on its network, on the hub's port).
        #[arg(long, value_name = "IP[:PORT]", value_parser = parse_address)]
        address: Option<std::net::SocketAddr>,
    },
    /// The hub's admin token this node keeps (express setup with the hub in this data dir):
    /// rotate it from here, or give it the current one after a rotation elsewhere.
    #[command(subcommand)]
    HubToken(HubTokenCommand),
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum HubTokenCommand {
    /// Replace the hub's admin token with the one this node keeps; the new one is kept here
    /// (sealed, never shown), the old one stops working everywhere.
    Rotate,
    /// Keep this admin token in place of the one this node has (after `gatehouse hub token
    /// rotate`); it is read from the first line of standard input and checked with the hub.
    Set,
}

/// `node hub-access`'s choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HubAccessChoice {
    /// Other machines too (HTTPS).
    Network,
    /// This machine only (HTTP on loopback).
    Local,
}

/// `IP:PORT`, or an `IP` alone (port 0: the hub keeps its port).
fn parse_address(text: &str) -> Result<std::net::SocketAddr, String> {
    let text = text.trim();
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 0)))
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT"))
}

/// The password of a backup file.
#[derive(Debug, Args)]
pub struct BackupPassword {
    /// Visible in the process list: prefer --password-stdin or GATEHOUSE_BACKUP_PASSWORD.
    #[arg(
        long,
        env = "GATEHOUSE_BACKUP_PASSWORD",
        hide_env_values = true,
        required_unless_present = "password_stdin"
    )]
    pub password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
}

impl BackupPassword {
    fn read(self) -> anyhow::Result<String> {
        if let Some(password) = self.password {
            return Ok(password);
        }
        super::stdin_line("the backup password")
    }
}

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Set a credential; the value is read from the first line of standard input (never an
    /// argument, so it can't show in the process list or shell history).
    Set { name: String },
    /// List credential names (never values), each with its version and the node it was set
    /// on; deletions are listed too (kept 30 days so every node learns of them).
    List,
    /// Delete a credential.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct RemoteAccessArgs {
    /// Port of the peer channel.
    #[arg(long, default_value_t = 8060)]
    pub port: u16,
    #[command(flatten)]
    pub certificate: CertificateArgs,
}

/// The certificate that encrypts the peer channel.
#[derive(Debug, Args)]
pub struct CertificateArgs {
    /// PEM or PFX file with the certificate (and its key) for the peer channel.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,
    /// PFX password. Visible in the process list: prefer the GATEHOUSE_CERT_PASSWORD variable.
    #[arg(long, env = "GATEHOUSE_CERT_PASSWORD", hide_env_values = true, requires = "cert")]
    pub password: Option<String>,
    /// Extra trusted roots (PEM) for checking the certificate, e.g. your organisation's CA.
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub roots: Option<std::path::PathBuf>,
}

impl CertificateArgs {
    /// Runs the checker; a rejected certificate is refused with its report.
    fn identity(&self) -> anyhow::Result<Option<crate::cert::Identity>> {
        let Some(path) = &self.cert else { return Ok(None) };
        let extra_roots = super::roots_arg(self.roots.as_deref())?;
        let options =
            crate::cert::Options { password: self.password.clone(), extra_roots, ..Default::default() };
        let (report, identity) = crate::cert::identity(path, &options)?;
        if let Some(identity) = identity {
            return Ok(Some(identity));
        }
        eprint!("{}", report.to_table());
        anyhow::bail!(
            "{} can't encrypt the peer channel: the checker's verdict is {} (see the failing rules above)",
            path.display(),
            report.verdict
        )
    }
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The gateway auth key (gh1_…). Visible to other users in the process list: prefer
    /// --key-stdin or the GATEHOUSE_AUTH_KEY environment variable.
    #[arg(long, env = "GATEHOUSE_AUTH_KEY", hide_env_values = true, required_unless_present = "key_stdin")]
    pub key: Option<String>,
    /// Read the auth key from the first line of standard input.
    #[arg(long, conflicts_with = "key")]
    pub key_stdin: bool,
    /// Node name, unique in the gateway and never changed (default: this machine's host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Port of this node's peer channel.
    #[arg(long, default_value_t = 8060)]
    pub peer_port: u16,
    /// host:port where the other nodes reach this one (default: HOSTNAME:PEER_PORT).
    #[arg(long)]
    pub peer_address: Option<String>,
    /// Also trust this PEM CA certificate for the hub's HTTPS (a hub with a private CA). It is
    /// kept in node.toml, so `node run` and the window trust it too.
    #[arg(long, env = "GATEHOUSE_HUB_CA", value_name = "PEM")]
    pub hub_ca: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub certificate: CertificateArgs,
}

pub fn run(command: NodeCommand) -> anyhow::Result<ExitCode> {
    let store = Store::new(crate::paths::data_dir());
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match command {
        NodeCommand::Register(args) => {
            let key = match args.key {
                Some(key) => key,
                None => super::stdin_line("the auth key")?.trim().to_owned(),
            };
            let tls = args.certificate.identity()?;
            let hub_ca = args.hub_ca.as_deref().map(super::admin::read_hub_ca).transpose()?;
            let registration = Registration {
                key,
                name: args.name,
                peer_port: args.peer_port,
                peer_address: args.peer_address,
                tls,
                hub_ca,
            };
            let settings = runtime.block_on(node::register(&store, registration))?;
            println!(
                "registered as '{}' with gateway '{}' at {}; start it with: gatehouse node run",
                settings.node_name, settings.gateway_name, settings.hub_url
            );
        }
        NodeCommand::Run { control_group } => {
            let group = control_group.as_deref().map(ControlGroup::lookup).transpose()?;
            runtime.block_on(run_service(store, group))?;
        }
        NodeCommand::Start | NodeCommand::Stop | NodeCommand::Restart => {
            runtime.block_on(control_service(&store, &command))?;
        }
        NodeCommand::Update { no_wait } => return runtime.block_on(update(&store, no_wait)),
        NodeCommand::AutoUpdate { off, window, days } => {
            auto_update(&store, off.is_some(), window.as_deref(), days.as_deref())?;
        }
        NodeCommand::UpdateWatchdog => {
            // Into the node's own log: its stderr goes nowhere.
            let _log = super::logging::init(Some(&store.dir().join("logs")), "info");
            let record = runtime.block_on(node::update::watchdog(&store))?;
            tracing::info!("{record}");
        }
        NodeCommand::Status { json } => {
            // This data dir's service, else the system service (as a window attaches).
            let target = runtime.block_on(super::service::target(&store))?;
            let live = runtime.block_on(live_status(&target.dir));
            status(&target.store(), live, json)?;
            if !json {
                super::service::print_process(&runtime, &target);
            }
        }
        NodeCommand::Credential(command) => credential(&store, command)?,
        NodeCommand::HubToken(command) => hub_token(&runtime, &store, command)?,
        NodeCommand::LogLevel { level } => {
            let level = ops::set_log_level(&store, &level)?;
            println!("{level}; a running node applies it within seconds");
        }
        NodeCommand::SetMetrics { address } => {
            let address = ops::parse_metrics_listen(&address)?;
            let metrics = ops::set_metrics_listen(&store, address)?;
            println!("{metrics}");
        }
        NodeCommand::Backup { out, force, password } => {
            let out = std::path::absolute(&out)
                .with_context(|| format!("finding the full path of {}", out.display()))?;
            // The data dir's own files are refused first, whatever --force says.
            ops::check_new_file(&store, &out, ops::Replace::Allowed)?;
            if !force && std::fs::symlink_metadata(&out).is_ok() {
                anyhow::bail!(
                    "{} already exists, and a backup doesn't replace a file (it may be the backup still needed); choose a new name, or give --force to replace it",
                    out.display()
                );
            }
            let replace = if force { ops::Replace::Allowed } else { ops::Replace::Never };
            println!("{}", ops::backup(&store, &out, &password.read()?, replace)?);
        }
        NodeCommand::Restore { file, password } => {
            let restored = ops::restore(&store, &file, &password.read()?)?;
            println!("{restored}; start it with: gatehouse node run");
        }
        NodeCommand::SetConcurrency { limit } => {
            let limit = ops::set_concurrency(&store, Some(limit))?;
            println!("{limit} (from its next start)");
        }
        NodeCommand::EnableRemoteAccess(args) => {
            // Without --cert the certificate the node has (if any) stays.
            let tls = args.certificate.identity()?;
            let access = ops::set_remote_access(&store, args.port, tls)?;
            println!("{access}; restart the node service to apply: gatehouse node run");
        }
        NodeCommand::DisableRemoteAccess => {
            let off = ops::disable_encryption(&store)?;
            println!("{off}; restart the node service to apply");
        }
        NodeCommand::AddNodeKey { expires, json } => {
            return add_node_key(&runtime, &store, expires, json);
        }
        NodeCommand::HubAccess { to, address } => runtime.block_on(hub_access(&store, to, address))?,
        NodeCommand::Unregister => {
            let settings = runtime.block_on(node::unregister(&store))?;
            println!("'{}' is no longer a node of gateway '{}'", settings.node_name, settings.gateway_name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `node add-node-key`: the key and the steps, or why there is none (exit 1).
fn add_node_key(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    expires: std::time::Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use crate::node::add_node::{self, AddNode};
    match runtime.block_on(add_node::add_node_key(store, Some(expires)))? {
        AddNode::Key(key) if json => {
            let value = serde_json::json!({
                "key": key.key,
                "gateway": key.gateway,
                "hub_url": key.hub_url,
                "pin": key.pin.map(|p| p.hex()),
                "expires_ms": key.expires_ms,
            });
            println!("{value}");
        }
        AddNode::Key(key) => print!("{key}"),
        AddNode::Full(sentence) => {
            eprintln!("{sentence}");
            return Ok(ExitCode::FAILURE);
        }
        AddNode::AskTheAdmin { command } => {
            eprintln!(
                "this node doesn't hold its hub's admin token, so it can't make a key; on the hub admin's machine run: {command}"
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `node start | stop | restart`, on the service a window would attach to.
async fn control_service(store: &Store, command: &NodeCommand) -> anyhow::Result<()> {
    let target = super::service::target(store).await?;
    match command {
        NodeCommand::Start => super::service::start(&target).await,
        NodeCommand::Stop => super::service::stop(&target).await,
        _ => super::service::restart(&target).await,
    }
}

/// `node hub-token rotate | set`.
fn hub_token(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    command: HubTokenCommand,
) -> anyhow::Result<()> {
    match command {
        HubTokenCommand::Rotate => println!("{}", runtime.block_on(ops::rotate_hub_admin_token(store))?),
        HubTokenCommand::Set => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("The hub's admin token (shown as you type; pipe it in to avoid that): ");
            }
            let token = super::stdin_line("the admin token")?;
            println!("{}", runtime.block_on(ops::set_hub_admin_token(store, &token))?);
        }
    }
    Ok(())
}

/// `node hub-access`: a running service is stopped, the hub moved, the service started again.
async fn hub_access(
    store: &Store,
    to: HubAccessChoice,
    address: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    if address.is_some() && to == HubAccessChoice::Local {
        anyhow::bail!("--address goes with `network`; `local` always listens on 127.0.0.1");
    }
    let access = match to {
        HubAccessChoice::Network => crate::hub::embedded::Access::Network(address),
        HubAccessChoice::Local => crate::hub::embedded::Access::Local,
    };
    let was_running = super::service::running(store.dir()).await.is_some();
    let target = super::service::Target::own(store);
    if was_running {
        super::service::stop(&target).await?;
    }
    let changed = crate::host::hub_access::set_hub_access(store, access);
    // Started again whatever happened: a refused move changed nothing.
    if was_running {
        super::service::start(&target).await?;
    }
    println!("{}", changed?);
    Ok(())
}

/// Log lines kept for a control-socket watcher that falls behind.
const LOG_FEED_LINES: usize = 1024;
/// How long `node run` waits for the embedded hub to stop after the service.
const HUB_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

async fn run_service(store: Store, group: Option<ControlGroup>) -> anyhow::Result<()> {
    let settings = store.settings()?;
    let log_dir = store.dir().join("logs");
    let feed = LogFeed::new(LOG_FEED_LINES);
    let logs = super::logging::init_with_feed(Some(&log_dir), &settings.log_level, Some(&feed));
    if let Some(exe) = node::update::staged_start(&store) {
        // The release this node updated itself to, which a package's binary (systemd's
        // ExecStart) can't replace in place: the same process goes on as it.
        tracing::info!(exe = %exe.display(), "starting the release this node updated itself to");
        let error = node::update::exec(&exe);
        tracing::warn!(exe = %exe.display(), "can't start the release this node updated itself to: {error}; running {} instead", crate::version());
    }
    // A fake machine for threshold tests, never for real use: say so loudly.
    let metrics: Box<dyn crate::node::metrics::MetricsSource> = match std::env::var("GATEHOUSE_FAKE_METRICS")
    {
        Ok(spec) => {
            let fake = crate::node::metrics::FakeMetrics::parse(&spec)
                .with_context(|| format!("GATEHOUSE_FAKE_METRICS={spec:?} is not `cpu=P,memory=P`"))?;
            tracing::warn!("reporting FAKE metrics ({spec}) instead of this machine's: for tests only");
            Box::new(fake)
        }
        Err(_) => Box::new(SystemMetrics::new()),
    };
    let shutdown = CancellationToken::new();
    let set_level = move |level: &str| logs.set_level(level);
    tokio::spawn(crate::node::logs::follow_level(
        store.clone(),
        settings.log_level,
        set_level,
        shutdown.clone(),
    ));
    tokio::spawn(super::hub::stop_on_signal(shutdown.clone()));
    // The control socket, then the data dir's embedded hub (express setup), then the service.
    if let Some(fake) = crate::fake_version() {
        tracing::warn!(version = %fake, real = %crate::VERSION, "reporting a FAKE version patched into this binary: for tests only");
    }
    let mut host = Host::new(store.clone(), shutdown).with_updates();
    if let Some(group) = group {
        host.share_control_socket(group);
    }
    let running = host.start(metrics, feed).await?;
    {
        let s = running.handle.status.borrow();
        tracing::info!(node = %s.node_name, gateway = %s.gateway_name, hub = %s.hub_url, "node service started");
    }
    // Kept for `gatehouse node status` while the service runs and after it stopped.
    let keeper = tokio::spawn(node::status_file::keep(store.clone(), running.handle.status.clone()));
    // A signal, or a Stop through the control socket (the Configuration Manager's).
    running.handle.shutdown.cancelled().await;
    let restart = running.handle.restart.clone();
    running.stop().await;
    let _ = keeper.await;
    host.stop(HUB_PATIENCE).await;
    let restart = restart.lock().ok().and_then(|mut r| r.take());
    if let Some(exe) = restart {
        // The update's watchdog judges the new binary.
        tracing::info!(exe = %exe.display(), "node service stopped; restarting into the updated binary");
        let error = node::update::exec(&exe);
        anyhow::bail!(
            "can't start the updated binary {}: {error}; the update's watchdog puts the previous one back",
            exe.display()
        );
    }
    tracing::info!("node service stopped");
    Ok(())
}

/// `node auto-update`: sets the window, turns it off, or (neither given) shows it.
fn auto_update(store: &Store, off: bool, window: Option<&str>, days: Option<&str>) -> anyhow::Result<()> {
    use crate::node::auto_update::UpdateWindow;
    let window = match (off, window) {
        (true, _) => None,
        (false, Some(window)) => Some(UpdateWindow::parse(window, days).map_err(ops::OpError::Window)?),
        (false, None) => {
            println!("{}", auto_update_line(store.settings()?.auto_update.as_ref(), None, None));
            return Ok(());
        }
    };
    let set = ops::set_auto_update(store, window)?;
    println!("{set}; a running node service follows it at its next heartbeat");
    Ok(())
}

/// The `node status` line about automatic updates: the window (or off) with the offset of
/// the running service's local time (else this command's), and who updates the binary when it
/// isn't the service.
fn auto_update_line(
    window: Option<&crate::node::auto_update::UpdateWindow>,
    by: Option<&node::update::SelfUpdate>,
    offset: Option<String>,
) -> String {
    use crate::node::update::SelfUpdate;
    let Some(window) = window else {
        return "Auto-update: off (turn it on with: gatehouse node auto-update --window 02:00-04:00 [--days sat,sun])"
            .to_owned();
    };
    let offset = offset.unwrap_or_else(|| crate::node::auto_update::local_now().offset);
    let window_only = match by {
        Some(SelfUpdate::Window) => {
            "; not while the Configuration Manager window runs the node (run it with `gatehouse node start`)"
        }
        _ => "",
    };
    format!("Auto-update: {window}, local time (now {offset}){window_only}")
}

/// `node update`: asks the running service to update, then (unless `no_wait`) waits for the
/// outcome in update.json: 0 updated, 1 not.
async fn update(store: &Store, no_wait: bool) -> anyhow::Result<ExitCode> {
    use crate::node::update::{self, DRAIN_TIMEOUT, HEALTH_DEADLINE, Outcome};
    let began = crate::node::unix_millis();
    let (from, to) = crate::node::control::ControlClient::update(store.dir()).await?;
    println!(
        "updating from {from} to {to}: when the hub gives this node the gateway's turn it takes no new runs, lets its runs finish, installs {to} and restarts into it"
    );
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    // The drain, the download, the health deadline and a rollback's, with room to spare.
    let limit = DRAIN_TIMEOUT + 2 * HEALTH_DEADLINE + std::time::Duration::from_secs(600);
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(record) = update::last_record(store).filter(|r| r.to == to && r.started_ms >= began) {
            match record.outcome {
                Outcome::Restarting => {}
                Outcome::Installed => {
                    println!("{record}");
                    return Ok(ExitCode::SUCCESS);
                }
                Outcome::RolledBack { .. } | Outcome::Failed { .. } => {
                    eprintln!("{record}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    anyhow::bail!(
        "the update to {to} didn't finish within {} min; see `gatehouse node status` and the log in {}/logs",
        limit.as_secs() / 60,
        store.dir().display()
    )
}

/// The status of the service running for `dir` (`node run` or a window), asked over its
/// control socket; `None` when none answers within a few seconds.
async fn live_status(dir: &std::path::Path) -> Option<NodeStatus> {
    use crate::node::control::{ControlClient, ControlEvent};
    let ask = async {
        let (_, mut events) = ControlClient::connect(dir).await.ok()??.watch().await.ok()?;
        while let Some(event) = events.recv().await {
            if let ControlEvent::Status(status) = event {
                return Some(*status);
            }
        }
        None
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), ask).await.ok().flatten()
}

/// Shows the registration and the status: live from the running service, else the last one
/// `node run` wrote.
fn status(store: &Store, live: Option<NodeStatus>, json: bool) -> anyhow::Result<()> {
    // The system service's node.toml is its user's alone: a member of its group sees what the
    // running service says instead.
    let settings = match store.settings() {
        Ok(settings) => Some(settings),
        Err(e @ crate::node::store::StoreError::NotRegistered) => return Err(e.into()),
        Err(_) if live.is_some() => None,
        Err(e) => return Err(e.into()),
    };
    let running = live.is_some();
    let last: Option<NodeStatus> = live.or_else(|| node::status_file::last(store));
    if json {
        let value = serde_json::json!({ "registration": settings, "running": running, "last_status": last });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let (node, gateway, hub) = match (&settings, &last) {
        (Some(s), _) => (&s.node_name, &s.gateway_name, &s.hub_url),
        (None, Some(s)) => (&s.node_name, &s.gateway_name, &s.hub_url),
        (None, None) => anyhow::bail!("the node service stopped while it was asked"),
    };
    // Who updates the binary, as the running service says (not an old status file's word).
    let live = last.as_ref().filter(|_| running);
    let by = live.and_then(|s| s.self_update.clone());
    let offset = live.and_then(|s| s.local_offset.clone());
    println!("Node:     {node} (gateway '{gateway}')");
    println!("Hub:      {hub}");
    match last {
        None => println!("Status:   not run yet; start it with: gatehouse node run"),
        Some(s) => {
            let state = s.state.map_or_else(|| "unknown".to_owned(), |state| format!("{state:?}"));
            let reason = s.reason.map(|r| format!(": {r}")).unwrap_or_default();
            let when = if running { "running now" } else { "not running; as of its last heartbeat" };
            println!("Status:   {state}{reason} ({when})");
            println!("Role:     {:?}", s.role);
            println!(
                "Hub link: {}",
                if s.hub_connected { "connected".to_owned() } else { s.hub_error.unwrap_or_default() }
            );
            println!("Runs:     {} running, limit {}", s.metrics.runs_running, s.metrics.runs_limit);
            if let Some(phase) = &s.update_phase {
                println!("Updating: {phase}");
            } else if let Some(offer) = &s.update {
                println!("Update:   {}", offer.advice);
            }
        }
    }
    if let Some(address) = settings.as_ref().and_then(|s| s.metrics_listen) {
        println!("Metrics:  http://{address}/metrics (this node's own, loopback only)");
    }
    let window = settings.as_ref().and_then(|s| s.auto_update.as_ref());
    println!("{}", auto_update_line(window, by.as_ref(), offset));
    if let Some(record) = node::update::last_record(store) {
        println!("Last update: {record}");
    }
    Ok(())
}

fn credential(store: &Store, command: CredentialCommand) -> anyhow::Result<()> {
    use crate::node::credentials;
    match command {
        CredentialCommand::Set { name } => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("Value for {name} (shown as you type; pipe it in to avoid that): ");
            }
            let value = super::stdin_line("the credential value")?;
            let version = credentials::set(store, &name, &value)?;
            println!(
                "credential {name:?} set (version {version}); the other nodes pick it up within seconds"
            );
        }
        CredentialCommand::List => {
            let set = credentials::load(store)?;
            let now = crate::node::unix_millis();
            for stamp in set.stamps(now) {
                let origin = match stamp.origin.as_str() {
                    "" => String::new(),
                    crate::node::CREDENTIAL_MANAGER => " through the credential manager".to_owned(),
                    node => format!(" on {node}"),
                };
                let what = if stamp.deleted { "deleted" } else { "set" };
                println!("{}\tversion {} ({what}{origin})", stamp.name, stamp.version);
            }
        }
        CredentialCommand::Delete { name } => {
            let version = credentials::delete(store, &name)?;
            println!("credential {name:?} deleted (version {version})");
        }
    }
    Ok(())
}
