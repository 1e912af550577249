//! `gatehouse hub …`: run the hub (`serve`) and administer it over HTTP.

use crate::hub::{self, HubConfig, db::Db};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Run the hub: the HTTP API for nodes and admins, and the status page at `/`.
    Serve(ServeArgs),
    /// Create, list, show, change and delete gateways on a running hub.
    #[command(subcommand, after_help = super::admin::EXIT_CODES)]
    Gateway(super::admin::GatewayCommand),
    /// Show and regenerate a gateway's auth keys on a running hub.
    #[command(subcommand, after_help = super::admin::EXIT_CODES)]
    Key(super::admin::KeyCommand),
    /// List and remove a gateway's nodes on a running hub.
    #[command(subcommand, after_help = super::admin::EXIT_CODES)]
    Node(super::admin::NodeCommand),
    /// Make, list and revoke tokens for one purpose (scraping /metrics, reading the status page),
    /// and rotate the admin token.
    #[command(subcommand, after_help = super::admin::EXIT_CODES)]
    Token(super::admin::TokenCommand),
    /// Publish signed releases for `gatehouse node update`, and list them.
    #[command(subcommand, after_help = super::admin::EXIT_CODES)]
    Release(super::release::HubReleaseCommand),
    /// Show the audit trail: who (the admin token, a node, the hub) did what and when —
    /// gateways and keys, nodes registered and removed, settings, jobs, credential names.
    #[command(after_help = super::admin::EXIT_CODES)]
    Audit(super::admin::AuditArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Database: sqlite://PATH (default: hub.db in the data dir) or postgres://USER@HOST/DB.
    /// A password here is visible in the process list: give a URL with a password in the
    /// GATEHOUSE_HUB_DB environment variable or with --db-file instead.
    #[arg(long, env = "GATEHOUSE_HUB_DB", hide_env_values = true, value_name = "URL")]
    pub db: Option<String>,
    /// Read the database URL from the first line of this file (keep it owner-only: it may
    /// hold the database password).
    #[arg(long, value_name = "PATH", conflicts_with = "db")]
    pub db_file: Option<std::path::PathBuf>,
    /// The URL nodes use to reach this hub, written into auth keys (default: http(s)://LISTEN).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Serve /metrics to anyone who can reach the hub (else a metrics token from
    /// `gatehouse hub token create --metrics`, or the admin token, is needed).
    #[arg(long)]
    pub public_metrics: bool,
    /// Serve the status page at / to anyone who can reach the hub (else it asks for the admin
    /// token or a viewer token from `gatehouse hub token create --viewer`).
    #[arg(long)]
    pub public_status: bool,
    /// Where the admin token made at first start is written (owner-only; default: admin-token
    /// in the data dir). It is shown besides only when stdout is a terminal, never into a
    /// journal or a pipe. Admin commands read it back with --token-file.
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Keep at most this many connections open; more wait until one closes (a connection
    /// that sends no request for 10 s is closed).
    #[arg(long, default_value_t = hub::server::MAX_CONNECTIONS, value_name = "N", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..), usize::from))]
    pub max_connections: usize,
    /// Keep at most this many connections open from one client address; more are closed at
    /// once (default: a quarter of --max-connections). Nodes behind one address (one machine,
    /// one NAT) share it.
    #[arg(long, value_name = "N", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..), usize::from))]
    pub max_connections_per_address: Option<usize>,
    /// Trust this release public key (the release.pub of `gatehouse release keygen`): only
    /// releases signed with a trusted key are published and offered to nodes. Repeat it to
    /// trust several (while changing keys).
    #[arg(long, value_name = "PUBFILE")]
    pub release_key: Vec<std::path::PathBuf>,
}

pub fn run(command: HubCommand) -> anyhow::Result<ExitCode> {
    match command {
        HubCommand::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
        HubCommand::Gateway(command) => super::admin::run_gateway(command),
        HubCommand::Key(command) => super::admin::run_key(command),
        HubCommand::Node(command) => super::admin::run_node(command),
        HubCommand::Audit(args) => super::admin::run_audit(args),
        HubCommand::Token(command) => super::admin::run_token(command),
        HubCommand::Release(command) => super::release::run_hub(command),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let url = database_url(&args)?;
    let token_path = match &args.admin_token_file {
        Some(path) => path.clone(),
        None => crate::paths::ensure_data_dir().context("creating the data dir")?.join(ADMIN_TOKEN_FILE),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(hub::tls::server_config(cert, key).context("setting up HTTPS")?),
        _ => None,
    };
    let db = Db::open(&url).await.map_err(|e| {
        anyhow::anyhow!("opening the hub database {}: {}", redact(&url), scrub(&e.to_string(), &url))
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {} (is another hub running there?)", args.listen))?;
    let address = listener.local_addr().context("reading the listening address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = args.public_url.unwrap_or_else(|| format!("{scheme}://{address}"));
    // Tests and scripts read these lines; keep their start stable.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {scheme}://{address}")?;
    // Checked before a token is made: one that can't be saved could never be shown again.
    let file = open_token_file(&token_path)?;
    match hub::ensure_admin_token(&db).await? {
        Some(token) => {
            file.commit_bytes(format!("{token}\n").as_bytes())
                .with_context(|| format!("writing the admin token into {}", token_path.display()))?;
            writeln!(
                out,
                "admin token written to {} (owner-only; admin commands read it with --token-file)",
                token_path.display()
            )?;
            // Only a person at a terminal sees it; never a journal, a log file or a pipe.
            if std::io::IsTerminal::is_terminal(&out) {
                writeln!(out, "admin token: {token}")?;
                writeln!(out, "(shown this once here; rotate it with: gatehouse hub token rotate)")?;
            }
        }
        // The hub had a token already: the file, if any, stays as it was.
        None => drop(file),
    }
    out.flush()?;
    drop(out);
    tracing::info!(%address, database = %redact(&url), "hub started");

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let release_keys = args
        .release_key
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --release-key {}", path.display()))?;
            Ok(crate::release::PublicKey::parse(&text, &format!("--release-key {}", path.display()))?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for key in &release_keys {
        tracing::info!(key = %key.id(), "trusting release key");
    }
    let config = HubConfig {
        release_keys,
        public_metrics: args.public_metrics,
        public_status: args.public_status,
        max_connections: args.max_connections,
        max_connections_per_address: args
            .max_connections_per_address
            .unwrap_or_else(|| hub::server::per_address_default(args.max_connections)),
        ..HubConfig::new(public_url)
    };
    hub::serve(listener, tls, db, config, shutdown).await.context("serving the hub")?;
    tracing::info!("hub stopped");
    Ok(())
}

/// The admin token's file in the data dir unless `--admin-token-file` names another.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The database URL: `--db-file`, else `--db` / `GATEHOUSE_HUB_DB`, else hub.db in the data dir.
/// A password in `--db` itself is in the process list, so it is warned about.
fn database_url(args: &ServeArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.db_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the database URL from --db-file {}", path.display()))?;
        return text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned).with_context(|| {
            format!(
                "--db-file {} is empty; put the database URL (postgres://…) on its first line",
                path.display()
            )
        });
    }
    if let Some(url) = &args.db {
        let from_argv = std::env::var("GATEHOUSE_HUB_DB").ok().as_deref() != Some(url.as_str());
        if from_argv && redact(url) != *url {
            tracing::warn!(
                "the --db URL holds a password, which every user of this machine can read in the process list; pass it in the GATEHOUSE_HUB_DB environment variable or with --db-file FILE instead"
            );
        }
        return Ok(url.clone());
    }
    let dir = crate::paths::ensure_data_dir().context("creating the data dir")?;
    Ok(hub::db::sqlite_url(&dir.join("hub.db")))
}

/// The admin token's file, opened (as an owner-only temp file beside it) before a token
/// exists: a place that can't be written is refused before a token is made.
pub(super) fn open_token_file(path: &std::path::Path) -> anyhow::Result<crate::machine::PendingFile> {
    crate::machine::PendingFile::create(path).with_context(|| {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        format!(
            "can't write the admin token into {} (no token was made): check that {} exists and is writable",
            path.display(),
            dir.display()
        )
    })
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM, so requests drain before the process exits.
pub(super) async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = interrupt.await;
            shutdown.cancel();
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    shutdown.cancel();
}

/// A database URL without its passwords, for messages: the one in the user info
/// (`postgres://hub:PASSWORD@db/gh`) and any `password=`/`sslpassword=` query parameter.
fn redact(url: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let mut out = match base.find("://") {
        Some(scheme) => {
            let rest = &base[scheme + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            match authority.rsplit_once('@').and_then(|(info, host)| Some((info.split_once(':')?.0, host))) {
                Some((user, host)) => {
                    format!("{}{user}:***@{host}{}", &base[..scheme + 3], &rest[authority_end..])
                }
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _))
                    if ["password", "sslpassword"].contains(&name.to_ascii_lowercase().as_str()) =>
                {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// `text` (an error from the database driver) without `url`'s password, should the driver
/// have quoted the URL or a part of it.
fn scrub(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &redact(url));
    for password in passwords(url) {
        if password.len() >= 3 {
            text = text.replace(&password, "***");
        }
    }
    text
}

/// The passwords in a database URL: the user info's and any `password=`/`sslpassword=`.
fn passwords(url: &str) -> Vec<String> {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let mut found = Vec::new();
    if let Some(rest) = base.split_once("://").map(|(_, rest)| rest) {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some((info, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = info.split_once(':')
        {
            found.push(password.to_owned());
        }
    }
    for pair in query.unwrap_or_default().split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && ["password", "sslpassword"].contains(&name.to_ascii_lowercase().as_str())
        {
            found.push(value.to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::{redact, scrub};

    #[test]
    fn driver_errors_lose_the_password() {
        let url = "postgres://hub:s3cret@db:5432/gh?sslpassword=other1";
        let said = scrub(&format!("error with configuration: {url} (s3cret, other1)"), url);
        assert!(!said.contains("s3cret") && !said.contains("other1"), "{said}");
    }

    #[test]
    fn database_passwords_are_not_shown() {
        assert_eq!(redact("postgres://hub:s3cret@db:5432/gh"), "postgres://hub:***@db:5432/gh");
        assert_eq!(redact("postgres://hub@db/gh"), "postgres://hub@db/gh");
        assert_eq!(redact("sqlite:///var/lib/hub.db"), "sqlite:///var/lib/hub.db");
        assert_eq!(
            redact("postgres://hub@db/gh?sslmode=require&password=s3@cret&Password=x"),
            "postgres://hub@db/gh?sslmode=require&password=***&Password=***"
        );
        assert_eq!(
            redact("postgres://hub:p@ss@db/gh?application_name=a"),
            "postgres://hub:***@db/gh?application_name=a"
        );
    }
}
