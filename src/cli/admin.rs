//! `gatehouse hub gateway|key|node …`: administer a running hub over its HTTP API, and the
//! pieces every admin command shares (`job` too): the connection flags, the admin token, the
//! exit-code convention, and the table/time/size formatting of the human views.
//!
//! The admin token comes only from `GATEHOUSE_ADMIN_TOKEN` or `--token-file`, never from an
//! argument value, so it can't leak through the process list or shell history.

use crate::client::{AdminClient, ClientError};
use crate::encoding::binary_size;
use crate::hub::db::now_ms;
use crate::protocol::{
    CreateGateway, GatewaySettings, GatewayState, GatewayView, KeyInfo, KeySlot, NewJoinKey, NodeView,
    Policy, Role, SettingsPatch, TokenKind,
};
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The `--help` footer of every admin command.
pub const EXIT_CODES: &str = "\
Exit codes: 0 done; 1 the hub refused the request (its reason and a hint are on stderr);
2 usage error, no admin token, or the hub can't be reached or understood.

The admin token is read from GATEHOUSE_ADMIN_TOKEN or from the file named by --token-file,
never from the command line.";

/// Where the hub is and how to talk to it; every admin command takes these.
#[derive(Debug, Args)]
pub struct Connection {
    /// The hub's URL.
    #[arg(long, env = "GATEHOUSE_HUB", default_value = "http://127.0.0.1:7070", value_name = "URL")]
    pub hub: String,
    /// Read the admin token from this file instead of the GATEHOUSE_ADMIN_TOKEN environment
    /// variable (the token itself is never accepted on the command line).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Also trust this PEM CA certificate for an HTTPS hub (e.g. its self-signed certificate).
    #[arg(long, env = "GATEHOUSE_HUB_CA", value_name = "PEM")]
    pub hub_ca: Option<PathBuf>,
    /// Print the hub's answer as JSON instead of the human view.
    #[arg(long)]
    pub json: bool,
}

impl Connection {
    /// Prints `value` as JSON with `--json`, else the sentence or table `human` makes of it.
    pub fn answer<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) -> anyhow::Result<()> {
        if self.json { emit_json(value) } else { emit(&human()) }
    }

    /// A client for the hub, with the admin token from the file or the environment.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let token = admin_token(self.token_file.as_deref())?;
        let roots = match &self.hub_ca {
            Some(path) => read_roots(path)?,
            None => Vec::new(),
        };
        Ok(AdminClient::with_extra_roots(&self.hub, &token, roots)?)
    }
}

/// The admin token: the first non-empty line of `--token-file`, else `GATEHOUSE_ADMIN_TOKEN`.
fn admin_token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the admin token from --token-file {}", path.display()))?;
        return text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned).with_context(|| {
            format!("--token-file {} is empty; put the hub's admin token (gha_…) in it", path.display())
        });
    }
    match std::env::var("GATEHOUSE_ADMIN_TOKEN") {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        _ => anyhow::bail!(
            "no admin token: set GATEHOUSE_ADMIN_TOKEN to the token `gatehouse hub serve` printed when it first started, or put it in a file and pass --token-file PATH"
        ),
    }
}

/// The PEM CA certificates of a `--hub-ca` file (admin commands and `node register` alike).
pub(super) fn read_roots(
    path: &std::path::Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem = read_hub_ca(path)?;
    crate::client::pem_roots(pem.as_bytes()).with_context(|| format!("reading --hub-ca {}", path.display()))
}

/// The text of a `--hub-ca` file, checked to hold PEM certificates (at most 1 MiB).
pub(super) fn read_hub_ca(path: &std::path::Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(path).with_context(|| format!("reading --hub-ca {}", path.display()))?.len();
    anyhow::ensure!(
        size <= 1 << 20,
        "--hub-ca {} is larger than 1 MiB; give the PEM CA certificate",
        path.display()
    );
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading --hub-ca {}", path.display()))?;
    crate::client::pem_roots(pem.as_bytes())
        .with_context(|| format!("reading --hub-ca {}", path.display()))?;
    Ok(pem)
}

/// Runs an admin command on a small runtime and applies the exit-code convention: a refusal
/// by the hub is printed here (error, then hint) with exit code 1; every other failure goes
/// back to `main`, which prints it on one line with exit code 2.
pub fn execute(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<ExitCode> {
    execute_with_code(async { command.await.map(|()| ExitCode::SUCCESS) })
}

/// Like [`execute`], for a command that picks its own exit code when it succeeds.
pub fn execute_with_code(
    command: impl Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(command) {
        Ok(code) => Ok(code),
        Err(err) => match err.downcast_ref::<ClientError>() {
            Some(ClientError::Refused { body, .. }) => {
                let text = match &body.hint {
                    Some(hint) => format!("error: {}\nhint: {hint}\n", body.error),
                    None => format!("error: {}\n", body.error),
                };
                let _ = std::io::stderr().write_all(text.as_bytes());
                Ok(ExitCode::from(1))
            }
            _ => Err(err),
        },
    }
}

/// Writes to stdout in one go; a closed pipe (`| head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to standard output"),
        _ => Ok(()),
    }
}

/// The value as pretty JSON, on stdout.
pub fn emit_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("writing JSON")?;
    text.push('\n');
    emit(&text)
}

// ---- commands ----

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Create a gateway and print both of its auth keys (the only time they are shown in full).
    #[command(after_help = EXIT_CODES)]
    Create(CreateArgs),
    /// List the gateways with their status and nodes.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Show one gateway: status, settings and nodes.
    #[command(after_help = EXIT_CODES)]
    Show(GatewayArgs),
    /// Delete a gateway with its nodes and jobs. Its nodes can no longer reach the hub.
    #[command(after_help = EXIT_CODES)]
    Delete(GatewayArgs),
    /// Change a gateway's settings; only the settings given change.
    #[command(after_help = EXIT_CODES)]
    Set(SetArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Show the start of each auth key and when it was made (the hub keeps only hashes).
    #[command(after_help = EXIT_CODES)]
    Show(GatewayArgs),
    /// Make a new primary or secondary auth key and print it (shown only this once). The old
    /// key stops registering nodes; nodes already registered keep working.
    #[command(after_help = EXIT_CODES)]
    Regenerate(RegenerateArgs),
    /// Make an extra auth key for adding nodes, that expires (30 minutes unless --expires), and
    /// with --once registers a single node. Printed only this once.
    #[command(after_help = EXIT_CODES)]
    Create(CreateKeyArgs),
    /// List the auth keys made with `hub key create`: start, uses, expiry, the nodes that used
    /// them (expired ones stay listed for a week).
    #[command(after_help = EXIT_CODES)]
    List(GatewayArgs),
    /// Revoke an auth key made with `hub key create` (its id is in `hub key list`). Nodes
    /// registered with it keep working.
    #[command(after_help = EXIT_CODES)]
    Revoke(RevokeKeyArgs),
}

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// The gateway's name or id.
    pub gateway: String,
    /// The key registers one node, then no more.
    #[arg(long)]
    pub once: bool,
    /// How long the key stays valid: up to 30d, e.g. 30m, 2h, 7d.
    #[arg(long, default_value = "30m", value_parser = parse_lifetime, value_name = "DURATION")]
    pub expires: std::time::Duration,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct RevokeKeyArgs {
    /// The gateway's name or id.
    pub gateway: String,
    /// The key's id, as `hub key list` shows it.
    pub id: String,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 30m, 2h or 7d"))
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List a gateway's nodes with their status, role and metrics.
    #[command(after_help = EXIT_CODES)]
    List(GatewayArgs),
    /// Remove a node from its gateway (e.g. a replaced machine), so it leaves no ghost node. Its
    /// key drops out of every peer's roster at their next heartbeat: it is shut out of the peer
    /// channel, whoever holds a copy of its data dir.
    #[command(after_help = EXIT_CODES)]
    Remove(RemoveNodeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The gateway's name or id.
    pub gateway: String,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The new gateway's name: 1 to 63 letters, digits, '-', '_' or '.'.
    pub name: String,
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The gateway's name or id.
    pub gateway: String,
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct RegenerateArgs {
    /// The gateway's name or id.
    pub gateway: String,
    /// Which key to replace.
    #[arg(value_enum)]
    pub slot: SlotArg,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct RemoveNodeArgs {
    /// The gateway's name or id.
    pub gateway: String,
    /// The node's name or id.
    pub node: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// A gateway's settings as flags; the ones left out keep their value (or default).
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// Most nodes the gateway accepts, 1 to 4 (default 4).
    #[arg(long, value_name = "N")]
    pub max_nodes: Option<u32>,
    /// How the dispatcher picks a node for a run (default primary).
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// Skip nodes whose CPU use is above P percent; 0 turns the limit off (default 0).
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub cpu_threshold: Option<u8>,
    /// Skip nodes whose memory use is above P percent; 0 turns the limit off (default 0).
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub memory_threshold: Option<u8>,
    /// Average CPU and memory use over M minutes for the thresholds (default 5).
    #[arg(long, value_name = "M")]
    pub aggregation_minutes: Option<u32>,
    /// How long a run waits for a free node before it fails (default 60).
    #[arg(long, value_name = "S")]
    pub queue_timeout_seconds: Option<u32>,
    /// Let the gateway's copies send at most MBPS megabits per second in all (as links are
    /// rated: 8 Mbit/s is 1 MB/s), shared by the nodes copying at the time; 0 turns the limit
    /// off (default 0). A change reaches running copies within a heartbeat.
    #[arg(long, value_name = "MBPS")]
    pub bandwidth_limit_mbps: Option<u32>,
}

impl SettingsArgs {
    fn update(&self) -> SettingsPatch {
        SettingsPatch {
            max_nodes: self.max_nodes,
            policy: self.policy.map(Policy::from),
            cpu_threshold: self.cpu_threshold,
            memory_threshold: self.memory_threshold,
            aggregation_minutes: self.aggregation_minutes,
            queue_timeout_seconds: self.queue_timeout_seconds,
            bandwidth_limit_mbps: self.bandwidth_limit_mbps,
        }
    }

    /// The defaults with the given flags applied.
    fn settings(&self) -> GatewaySettings {
        let d = GatewaySettings::default();
        let u = self.update();
        GatewaySettings {
            max_nodes: u.max_nodes.unwrap_or(d.max_nodes),
            policy: u.policy.unwrap_or(d.policy),
            cpu_threshold: u.cpu_threshold.unwrap_or(d.cpu_threshold),
            memory_threshold: u.memory_threshold.unwrap_or(d.memory_threshold),
            aggregation_minutes: u.aggregation_minutes.unwrap_or(d.aggregation_minutes),
            queue_timeout_seconds: u.queue_timeout_seconds.unwrap_or(d.queue_timeout_seconds),
            bandwidth_limit_mbps: u.bandwidth_limit_mbps.unwrap_or(d.bandwidth_limit_mbps),
        }
    }

    fn is_empty(&self) -> bool {
        let u = self.update();
        u.max_nodes.is_none()
            && u.policy.is_none()
            && u.cpu_threshold.is_none()
            && u.memory_threshold.is_none()
            && u.aggregation_minutes.is_none()
            && u.queue_timeout_seconds.is_none()
            && u.bandwidth_limit_mbps.is_none()
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    /// The first available node in registration order; the next one when it is full.
    Primary,
    /// A random available node.
    Distribute,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Primary => Policy::Primary,
            PolicyArg::Distribute => Policy::Distribute,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SlotArg {
    Primary,
    Secondary,
}

impl From<SlotArg> for KeySlot {
    fn from(s: SlotArg) -> Self {
        match s {
            SlotArg::Primary => KeySlot::Primary,
            SlotArg::Secondary => KeySlot::Secondary,
        }
    }
}

pub fn run_gateway(command: GatewayCommand) -> anyhow::Result<ExitCode> {
    match command {
        GatewayCommand::Create(args) => execute(create(args)),
        GatewayCommand::List(args) => execute(list(args)),
        GatewayCommand::Show(args) => execute(show(args)),
        GatewayCommand::Delete(args) => execute(delete(args)),
        GatewayCommand::Set(args) => {
            if args.settings.is_empty() {
                anyhow::bail!(
                    "nothing to change: give at least one of --max-nodes, --policy, --cpu-threshold, --memory-threshold, --aggregation-minutes, --queue-timeout-seconds, --bandwidth-limit-mbps"
                );
            }
            execute(set(args))
        }
    }
}

pub fn run_key(command: KeyCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Show(args) => execute(show_keys(args)),
        KeyCommand::Regenerate(args) => execute(regenerate(args)),
        KeyCommand::Create(args) => execute(create_key(args)),
        KeyCommand::List(args) => execute(list_join_keys(args)),
        KeyCommand::Revoke(args) => execute(revoke_key(args)),
    }
}

pub fn run_node(command: NodeCommand) -> anyhow::Result<ExitCode> {
    match command {
        NodeCommand::List(args) => execute(list_nodes(args)),
        NodeCommand::Remove(args) => execute(remove_node(args)),
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token for one purpose (--metrics, --viewer or --credential-manager --gateway G);
    /// it is shown in full this once (the hub keeps its hash).
    #[command(after_help = EXIT_CODES)]
    Create(CreateTokenArgs),
    /// List tokens: id, kind, gateway (credential-manager tokens), when made and revoked
    /// (never the tokens).
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Revoke a token by id: it stops working at once.
    #[command(after_help = EXIT_CODES)]
    Revoke(RevokeTokenArgs),
    /// Replace the admin token: the one given stops working at once, and the new one is
    /// written over --token-file (atomically, owner-only), or, without it, shown on the
    /// terminal this once (never into a pipe). Audited.
    #[command(after_help = EXIT_CODES)]
    Rotate(RotateTokenArgs),
}

#[derive(Debug, Args)]
pub struct RotateTokenArgs {
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["metrics", "viewer", "credential_manager"])))]
pub struct CreateTokenArgs {
    /// A token that may scrape /metrics and nothing else (for Prometheus).
    #[arg(long)]
    pub metrics: bool,
    /// A token that may read the status page at / and nothing else.
    #[arg(long)]
    pub viewer: bool,
    /// A token that may set, list and delete the credentials of one gateway (--gateway)
    /// with `gatehouse credential …`, and nothing else.
    #[arg(long, requires = "gateway")]
    pub credential_manager: bool,
    /// The gateway a --credential-manager token is for.
    #[arg(long, value_name = "GATEWAY", requires = "credential_manager")]
    pub gateway: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct RevokeTokenArgs {
    /// The token's id (as `hub token list` shows it).
    pub id: String,
    #[command(flatten)]
    pub connection: Connection,
}

pub fn run_token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => execute(create_token(args)),
        TokenCommand::List(args) => execute(list_tokens(args)),
        TokenCommand::Revoke(args) => execute(revoke_token(args)),
        TokenCommand::Rotate(args) => execute(rotate_admin_token(args)),
    }
}

async fn create_token(args: CreateTokenArgs) -> anyhow::Result<()> {
    let kind = if args.viewer {
        TokenKind::Viewer
    } else if args.credential_manager {
        TokenKind::CredentialManager
    } else {
        TokenKind::Metrics
    };
    let client = args.connection.client()?;
    let created = match &args.gateway {
        Some(gateway) => client.create_gateway_token(kind, gateway).await?,
        None => client.create_token(kind).await?,
    };
    args.connection.answer(&created, || token_text(kind, &created))
}

/// A new token, shown this once, and how it is used.
fn token_text(kind: TokenKind, created: &crate::protocol::CreatedToken) -> String {
    let (what, how) = match kind {
        TokenKind::Metrics => (
            "Metrics token",
            "Prometheus sends it as `authorization: {credentials_file: FILE}` with this token in FILE.",
        ),
        TokenKind::Viewer => (
            "Viewer token",
            "Open the hub's address in a browser and give this token as the password (any user name).",
        ),
        TokenKind::CredentialManager => (
            "Credential-manager token",
            "On the admin machine, put it in GATEHOUSE_ADMIN_TOKEN (or a file for --token-file) and run: gatehouse credential set NAME --gateway GATEWAY",
        ),
    };
    format!(
        "{what} {} (shown in full only this once: the hub keeps only its hash):\n  {}\n\n{how}\nRevoke it with: gatehouse hub token revoke {}\n",
        created.id, created.token, created.id
    )
}

async fn list_tokens(args: ListArgs) -> anyhow::Result<()> {
    let tokens = args.connection.client()?.tokens().await?;
    args.connection.answer(&tokens, || tokens_text(&tokens))
}

fn tokens_text(tokens: &[crate::protocol::TokenInfo]) -> String {
    if tokens.is_empty() {
        return "No tokens yet; make one with: gatehouse hub token create --metrics\n".to_owned();
    }
    let mut table = Table::new(&["ID", "KIND", "GATEWAY", "CREATED", "REVOKED"]);
    for t in tokens {
        table.row(vec![
            t.id.clone(),
            t.kind.as_str().replace('_', "-"),
            t.gateway.clone().unwrap_or_else(|| "-".to_owned()),
            timestamp(t.created_ms),
            t.revoked_ms.map_or_else(|| "-".to_owned(), timestamp),
        ]);
    }
    table.render()
}

async fn revoke_token(args: RevokeTokenArgs) -> anyhow::Result<()> {
    args.connection.client()?.revoke_token(&args.id).await?;
    args.connection.answer(&serde_json::json!({"revoked": args.id}), || {
        format!("Revoked token {}; it no longer works.\n", args.id)
    })
}

async fn rotate_admin_token(args: RotateTokenArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let connection = &args.connection;
    let client = connection.client()?;
    let on_terminal = std::io::stdout().is_terminal();
    // The file is opened before the hub is asked: a token that can't be saved is never made.
    let file = match &connection.token_file {
        Some(path) => Some((path, super::hub::open_token_file(path)?)),
        None if on_terminal => None,
        None => anyhow::bail!(
            "the new admin token is shown only on a terminal, and stdout is not one: give --token-file PATH (the file the current token is in), which is then rewritten with the new token"
        ),
    };
    let token = client.rotate_admin_token().await?.token;
    let Some((path, pending)) = file else {
        return connection.answer(&serde_json::json!({"token": token}), || format!(
            "New admin token (shown this once; the old one no longer works):\n  {token}\n\nSet GATEHOUSE_ADMIN_TOKEN to it, or keep it in a file for --token-file.\n"
        ));
    };
    if let Err(e) = pending.commit_bytes(format!("{token}\n").as_bytes()) {
        // Said on stderr: the token goes with it only to a person at a terminal.
        let shown = if std::io::stderr().is_terminal() {
            format!("; it is {token}, keep it now")
        } else {
            String::new()
        };
        anyhow::bail!(
            "the hub made a new admin token (the old one no longer works), but it couldn't be written into {} ({e}){shown}",
            path.display()
        );
    }
    connection.answer(&serde_json::json!({"token_file": path}), || {
        format!(
            "Admin token replaced: the new one is in {} and the old one no longer works.\n",
            path.display()
        )
    })
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this gateway's entries (by name or id; a deleted gateway's too).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Show the newest N entries (default 100, at most 1,000), oldest first.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub connection: Connection,
}

pub fn run_audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    execute(audit(args))
}

async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let entries = args.connection.client()?.audit(args.gateway.as_deref(), args.limit).await?;
    args.connection.answer(&entries, || {
        if entries.is_empty() {
            return "The audit trail has no entries for this yet.\n".to_owned();
        }
        let mut table = Table::new(&["WHEN", "WHO", "GATEWAY", "WHAT", "DETAIL"]);
        for entry in &entries {
            table.row(vec![
                timestamp(entry.at_ms),
                entry.actor.clone(),
                entry.gateway_name.clone().unwrap_or_else(|| "-".to_owned()),
                entry.action.clone(),
                entry.detail.clone(),
            ]);
        }
        table.render()
    })
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = args.connection.client()?;
    let request = CreateGateway { name: args.name.clone(), settings: args.settings.settings() };
    let created = client.create_gateway(&request).await?;
    args.connection.answer(&created, || {
        let g = &created.gateway;
        format!(
            "{}\nAuth keys (shown in full only this once: the hub keeps only their hashes, so copy them now):\n  primary:   {}\n  secondary: {}\n\nRegister a node with: gatehouse node register --key KEY\nLost a key? Make a new one with: gatehouse hub key regenerate {} primary|secondary\n",
            gateway_text(g),
            created.keys.primary,
            created.keys.secondary,
            g.name
        )
    })
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let gateways = args.connection.client()?.gateways().await?;
    args.connection.answer(&gateways, || {
        if gateways.is_empty() {
            return "No gateways yet; create one with: gatehouse hub gateway create NAME\n".to_owned();
        }
        let mut table = Table::new(&["NAME", "ID", "STATUS", "NODES", "VERSION", "POLICY"]);
        for g in &gateways {
            table.row(vec![
                g.name.clone(),
                g.id.clone(),
                with_reason(gateway_state(g.status), g.reason.as_deref()),
                format!("{}/{}", g.nodes.len(), g.settings.max_nodes),
                g.version.clone().unwrap_or_else(|| "-".to_owned()),
                policy(g.settings.policy).to_owned(),
            ]);
        }
        table.render()
    })
}

async fn show(args: GatewayArgs) -> anyhow::Result<()> {
    let gateway = args.connection.client()?.gateway(&args.gateway).await?;
    args.connection.answer(&gateway, || {
        let mut out = gateway_text(&gateway);
        out.push_str("\nNodes:\n");
        out.push_str(&nodes_text(&gateway.name, &gateway.nodes, "  "));
        out
    })
}

async fn delete(args: GatewayArgs) -> anyhow::Result<()> {
    args.connection.client()?.delete_gateway(&args.gateway).await?;
    if args.connection.json {
        return Ok(());
    }
    emit(&format!(
        "Deleted gateway '{}' with its nodes and jobs; its auth keys and node tokens no longer work.\n",
        args.gateway
    ))
}

async fn set(args: SetArgs) -> anyhow::Result<()> {
    let gateway = args.connection.client()?.update_settings(&args.gateway, &args.settings.update()).await?;
    args.connection.answer(&gateway, || {
        format!("Updated gateway '{}': {}\n", gateway.name, settings_text(&gateway.settings))
    })
}

async fn show_keys(args: GatewayArgs) -> anyhow::Result<()> {
    let keys = args.connection.client()?.keys(&args.gateway).await?;
    args.connection.answer(&keys, || {
        let mut out = format!(
            "Auth keys of gateway '{}' (the hub keeps only their hashes, so only the start of each is shown):\n",
            args.gateway
        );
        let mut table = Table::new(&["KEY", "START", "CREATED"]);
        for KeyInfo { slot, hint, created_ms } in &keys {
            table.row(vec![slot_name(*slot).to_owned(), hint.clone(), timestamp_with_age(*created_ms)]);
        }
        out.push_str(&indent(&table.render(), "  "));
        out.push_str("To get a full key, make a new one (the old one then stops registering nodes; registered nodes keep working):\n");
        out.push_str(&indent(&format!("gatehouse hub key regenerate {} primary|secondary", args.gateway), "  "));
        let _ = writeln!(
            out,
            "Keys made for adding nodes (gatehouse hub key create) are listed by: gatehouse hub key list {}",
            args.gateway
        );
        out
    })
}

async fn list_join_keys(args: GatewayArgs) -> anyhow::Result<()> {
    let made = args.connection.client()?.join_keys(&args.gateway).await?;
    args.connection.answer(&made, || {
        let gateway = &args.gateway;
        if made.is_empty() {
            return format!(
                "Gateway '{gateway}' has no keys made for adding nodes. Make one with: gatehouse hub key create {gateway} --once\n"
            );
        }
        let mut out = format!(
            "Keys made for adding nodes to gateway '{gateway}' (newest first; the hub keeps only their hashes; revoke with: gatehouse hub key revoke {gateway} ID):\n"
        );
        let mut table = Table::new(&["ID", "START", "USES", "EXPIRES", "USED"]);
        let now = now_ms();
        for key in &made {
            let lasts = if key.once { "once" } else { "until it expires" };
            let expires = if key.expires_ms <= now {
                format!("expired {}", timestamp(key.expires_ms))
            } else {
                timestamp(key.expires_ms)
            };
            let registered = match (&key.last_used_by, key.last_used_ms) {
                (Some(node), Some(at)) => format!("{} × (last: {node}, {})", key.used_count, age(at)),
                _ => "never".to_owned(),
            };
            table.row(vec![key.id.clone(), key.hint.clone(), lasts.to_owned(), expires, registered]);
        }
        out.push_str(&indent(&table.render(), "  "));
        out
    })
}

async fn create_key(args: CreateKeyArgs) -> anyhow::Result<()> {
    let request = NewJoinKey { once: args.once, expires_in_seconds: Some(args.expires.as_secs()) };
    let made = args.connection.client()?.create_join_key(&args.gateway, &request).await?;
    args.connection.answer(&made, || {
        let uses = if made.info.once { "registers one node" } else { "registers nodes" };
        format!(
            "New auth key {} of gateway '{}' (shown only this once; copy it now). It {uses} until {}:\n  {}\nOn the new node's machine: gatehouse node register --key-stdin --name NAME\n",
            made.info.id,
            args.gateway,
            timestamp(made.info.expires_ms),
            made.key
        )
    })
}

async fn revoke_key(args: RevokeKeyArgs) -> anyhow::Result<()> {
    args.connection.client()?.revoke_join_key(&args.gateway, &args.id).await?;
    emit(&format!(
        "Revoked auth key {} of gateway '{}': it registers no more nodes; nodes registered with it keep working.\n",
        args.id, args.gateway
    ))
}

async fn regenerate(args: RegenerateArgs) -> anyhow::Result<()> {
    let key = args.connection.client()?.regenerate_key(&args.gateway, args.slot.into()).await?;
    args.connection.answer(&key, || {
        let slot = slot_name(key.slot);
        format!(
            "New {slot} auth key of gateway '{}' (shown only this once; copy it now):\n  {}\nThe old {slot} key no longer registers nodes; nodes already registered keep working.\n",
            args.gateway, key.key
        )
    })
}

async fn list_nodes(args: GatewayArgs) -> anyhow::Result<()> {
    let nodes = args.connection.client()?.nodes(&args.gateway).await?;
    args.connection.answer(&nodes, || nodes_text(&args.gateway, &nodes, ""))
}

async fn remove_node(args: RemoveNodeArgs) -> anyhow::Result<()> {
    args.connection.client()?.remove_node(&args.gateway, &args.node).await?;
    if args.connection.json {
        return Ok(());
    }
    emit(&format!(
        "Removed node '{}' from gateway '{}'. Its machine can register again with an auth key.\n",
        args.node, args.gateway
    ))
}

// ---- human views ----

fn gateway_text(g: &GatewayView) -> String {
    format!(
        "Gateway '{}' (id {})\n  status:     {}\n  version:    {}\n  encryption: {}\n  nodes:      {} of at most {}\n  settings:   {}\n  credentials: {}\n",
        g.name,
        g.id,
        with_reason(gateway_state(g.status), g.reason.as_deref()),
        g.version.as_deref().unwrap_or("- (no nodes)"),
        if g.encryption { "on" } else { "off" },
        g.nodes.len(),
        g.settings.max_nodes,
        settings_text(&g.settings),
        credentials_text(g),
    )
}

/// "in sync", or per credential who is behind or ahead of the clock (names, never values).
fn credentials_text(g: &GatewayView) -> String {
    if g.credentials_in_sync {
        return format!(
            "in sync ({} on every online node)",
            g.credentials.iter().filter(|c| !c.deleted).count()
        );
    }
    let lines: Vec<String> = g
        .credentials
        .iter()
        .filter(|c| !c.nodes_behind.is_empty() || !c.nodes_ahead.is_empty())
        .map(|c| {
            let mut parts = Vec::new();
            if !c.nodes_behind.is_empty() {
                parts.push(format!("{} behind", c.nodes_behind.join(", ")));
            }
            if !c.nodes_ahead.is_empty() {
                parts.push(format!("{} ahead of the clock", c.nodes_ahead.join(", ")));
            }
            format!("{}: {}", c.name, parts.join("; "))
        })
        .collect();
    format!("out of sync\n    {}", lines.join("\n    "))
}

fn settings_text(s: &GatewaySettings) -> String {
    let percent = |p: u8| if p == 0 { "off".to_owned() } else { format!("{p}%") };
    let bandwidth = match s.bandwidth_limit_mbps {
        0 => "off".to_owned(),
        mbps => format!("{mbps} Mbit/s"),
    };
    format!(
        "max nodes {}, policy {}, CPU threshold {}, memory threshold {}, averaged over {} min, queue timeout {} s, bandwidth limit {bandwidth}",
        s.max_nodes,
        policy(s.policy),
        percent(s.cpu_threshold),
        percent(s.memory_threshold),
        s.aggregation_minutes,
        s.queue_timeout_seconds
    )
}

/// The nodes table, or a sentence saying how to add the first node.
fn nodes_text(gateway: &str, nodes: &[NodeView], prefix: &str) -> String {
    if nodes.is_empty() {
        return format!(
            "{prefix}Gateway '{gateway}' has no nodes yet. Register one on its machine with: gatehouse node register --key KEY\n"
        );
    }
    let mut table = Table::new(&[
        "NAME",
        "STATUS",
        "ROLE",
        "VERSION",
        "MEM FREE",
        "CPU",
        "NET IN/OUT",
        "RUNS",
        "CRED VER",
        "HEARTBEAT",
    ]);
    for n in nodes {
        let m = &n.metrics;
        table.row(vec![
            n.name.clone(),
            with_reason(&format!("{:?}", n.status), n.reason.as_deref()),
            match n.role {
                Role::Dispatcher => "dispatcher",
                Role::Worker => "worker",
            }
            .to_owned(),
            n.version.clone(),
            binary_size(m.available_memory_bytes),
            format!("{:.1}%", m.cpu_percent),
            format!(
                "{}/s / {}/s",
                binary_size(m.network_in_bytes_per_second),
                binary_size(m.network_out_bytes_per_second)
            ),
            format!("{}/{}", m.runs_running, m.runs_limit),
            m.credential_version.to_string(),
            n.last_heartbeat_ms.map_or_else(|| "never".to_owned(), age),
        ]);
    }
    indent(&table.render(), prefix)
}

fn gateway_state(state: GatewayState) -> &'static str {
    match state {
        GatewayState::NeedsRegistration => "Needs registration",
        GatewayState::Online => "Online",
        GatewayState::Offline => "Offline",
        GatewayState::Limited => "Limited",
    }
}

fn policy(policy: Policy) -> &'static str {
    match policy {
        Policy::Primary => "primary",
        Policy::Distribute => "distribute",
    }
}

fn slot_name(slot: KeySlot) -> &'static str {
    match slot {
        KeySlot::Primary => "primary",
        KeySlot::Secondary => "secondary",
    }
}

fn with_reason(state: &str, reason: Option<&str>) -> String {
    match reason {
        Some(reason) if !reason.is_empty() => format!("{state}: {reason}"),
        _ => state.to_owned(),
    }
}

/// Each line of `text` with `prefix` in front.
pub fn indent(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(prefix);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A plain-text table: columns padded to their widest cell, the last one not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table { rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[c].saturating_sub(cell.chars().count()) + 2;
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// How long ago `ms` was: "4 s ago", "3 min ago", "2 h ago", "5 d ago".
pub fn age(ms: i64) -> String {
    let seconds = now_ms().saturating_sub(ms) / 1000;
    match seconds {
        ..=0 => "just now".to_owned(),
        1..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86_400 => format!("{} h ago", seconds / 3600),
        _ => format!("{} d ago", seconds / 86_400),
    }
}

/// `ms` as an RFC 3339 UTC time (to the second).
pub fn timestamp(ms: i64) -> String {
    crate::encoding::utc_timestamp(ms)
}

pub fn timestamp_with_age(ms: i64) -> String {
    format!("{} ({})", timestamp(ms), age(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_do_not_pad_the_last_column() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.row(vec!["wide cell".to_owned(), "x".to_owned()]);
        assert_eq!(table.render(), "A          LONGER\nwide cell  x\n");
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(age(now_ms() - 5_000), "5 s ago");
        assert_eq!(age(now_ms() - 180_000), "3 min ago");
        assert_eq!(age(now_ms() + 10_000), "just now");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
    }
}
