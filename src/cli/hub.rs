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
    /// Make, list and revoke tokens for one purpose (scraping /metrics, reading the status page).
    #[command(subcommand, after_help = super::admin::EXIT_CODES)]
    Token(super::admin::TokenCommand),
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
    #[arg(long, env = "GATEHOUSE_HUB_DB", hide_env_values = true)]
    pub db: Option<String>,
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
    /// Write the admin token made at first start into this file (owner-only) instead of
    /// printing it, e.g. under systemd, whose journal must not hold it. Admin commands read
    /// it back with --token-file.
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Keep at most this many connections open; more wait until one closes (a connection
    /// that sends no request for 10 s is closed).
    #[arg(long, default_value_t = hub::server::MAX_CONNECTIONS, value_name = "N", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..), usize::from))]
    pub max_connections: usize,
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
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let url = if let Some(url) = args.db {
        url
    } else {
        let dir = crate::paths::ensure_data_dir().context("creating the data dir")?;
        hub::db::sqlite_url(&dir.join("hub.db"))
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(hub::tls::server_config(cert, key).context("setting up HTTPS")?),
        _ => None,
    };
    let db = Db::open(&url).await.with_context(|| format!("opening the hub database {}", redact(&url)))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {} (is another hub running there?)", args.listen))?;
    let address = listener.local_addr().context("reading the listening address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = args.public_url.unwrap_or_else(|| format!("{scheme}://{address}"));
    // Tests and scripts read these two lines; keep their start stable.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {scheme}://{address}")?;
    if let Some(path) = &args.admin_token_file {
        // Checked before a token is made: one that can't be saved could never be shown again.
        let file = TokenFile::open(path)?;
        match hub::ensure_admin_token(&db).await? {
            Some(token) => {
                file.save(&token)?;
                writeln!(out, "admin token written to {} (admin commands: --token-file)", path.display())?;
            }
            None => file.discard(),
        }
    } else if let Some(token) = hub::ensure_admin_token(&db).await? {
        writeln!(out, "admin token: {token}")?;
        writeln!(out, "(shown once: store it safely; admin commands read it from GATEHOUSE_ADMIN_TOKEN)")?;
    }
    out.flush()?;
    drop(out);
    tracing::info!(%address, database = %redact(&url), "hub started");

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let config = HubConfig {
        public_metrics: args.public_metrics,
        public_status: args.public_status,
        max_connections: args.max_connections,
        ..HubConfig::new(public_url)
    };
    hub::serve(listener, tls, db, config, shutdown).await.context("serving the hub")?;
    tracing::info!("hub stopped");
    Ok(())
}

/// The `--admin-token-file` being written: an owner-only temp file beside it, opened before
/// the token exists, renamed into place once it holds the token.
struct TokenFile {
    temp: std::path::PathBuf,
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl TokenFile {
    fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let name = path.file_name().with_context(|| {
            format!("--admin-token-file {} names no file; give a file path", path.display())
        })?;
        let temp =
            dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), crate::encoding::random_hex::<6>()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&temp).with_context(|| {
            format!(
                "can't write the admin token into {} (no token was made): check that {} exists and is writable",
                path.display(),
                dir.display()
            )
        })?;
        Ok(Self { temp, path: path.to_owned(), file })
    }

    fn save(mut self, token: &str) -> anyhow::Result<()> {
        let result = (|| {
            writeln!(self.file, "{token}")?;
            self.file.sync_all()?;
            std::fs::rename(&self.temp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.temp);
        }
        result.with_context(|| format!("writing the admin token into {}", self.path.display()))
    }

    /// The hub had a token already: the file, if any, stays as it was.
    fn discard(self) {
        let _ = std::fs::remove_file(&self.temp);
    }
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

#[cfg(test)]
mod tests {
    use super::redact;

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
