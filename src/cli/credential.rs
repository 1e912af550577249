//! `gatehouse credential set|list|delete --gateway G`: the credential manager, from any
//! machine that reaches the hub. The value is sealed here, once per node, to that node's
//! X25519 key (`node::sealed`); the hub stores and forwards only ciphertext. When the gateway
//! encrypts its peer channel, every node's key must come with a proof signed by its
//! certificate, checked here with the rules of `gatehouse cert check` (`--roots`, the public
//! roots unless `--no-system-roots`); otherwise the keys are the ones the hub vouches for, and
//! the output says so.
//!
//! The token (the hub's admin token, or a credential-manager token of the gateway) comes from
//! `GATEHOUSE_ADMIN_TOKEN` or `--token-file`, the value from standard input or a prompt that
//! doesn't echo, never from an argument.

use super::admin::{Connection, execute};
use crate::node::sealed::{self, Binding};
use crate::protocol::{GatewayCredentials, NodeCiphertext, NodeState, PutCredential};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Set a data-store credential on every node of a gateway. The value is read from the
    /// first line of standard input, or asked for without echo on a terminal (never an
    /// argument), and sealed on this machine for each node.
    #[command(after_help = AFTER_HELP)]
    Set(CredentialArgs),
    /// List a gateway's credentials (names and versions, never values): which nodes are
    /// behind or ahead, and why.
    #[command(after_help = AFTER_HELP)]
    List(ListArgs),
    /// Delete a credential on every node of a gateway.
    #[command(after_help = AFTER_HELP)]
    Delete(CredentialArgs),
}

const AFTER_HELP: &str = "\
The token is the hub's admin token or a credential-manager token made for the gateway
(gatehouse hub token create --credential-manager --gateway G), read from
GATEHOUSE_ADMIN_TOKEN or --token-file, never from the command line.

Exit codes: 0 done; 1 the hub refused the request (its reason and a hint are on stderr);
2 usage error, no token, a node's certificate not trusted, or the hub can't be reached.";

/// How the nodes' certificates are checked (gateways that encrypt their peer channel).
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Also trust the CA certificates in this PEM file for the nodes' certificates (as
    /// `gatehouse cert check --roots`). Given, every node must prove its key with a trusted
    /// certificate, whatever the hub says of the gateway's encryption.
    #[arg(long, visible_alias = "ca", value_name = "PEM")]
    pub roots: Option<PathBuf>,
    /// Trust only the --roots file, not the public web roots.
    #[arg(long, requires = "roots")]
    pub no_system_roots: bool,
}

/// One credential of a gateway, and how to reach the hub and trust the nodes: what `set` and
/// `delete` both take.
#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The credential's name, as job specs name it (letters, digits, '-', '_', '.').
    pub name: String,
    /// The gateway (name or id).
    #[arg(long)]
    pub gateway: String,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The gateway (name or id).
    #[arg(long)]
    pub gateway: String,
    #[command(flatten)]
    pub connection: Connection,
}

pub fn run(command: CredentialCommand) -> anyhow::Result<ExitCode> {
    match command {
        CredentialCommand::Set(args) => {
            // Read before anything goes to the hub, so a prompt isn't raced by output.
            let value = read_value(&args.name)?;
            execute(send(args, Some(value)))
        }
        CredentialCommand::Delete(args) => execute(send(args, None)),
        CredentialCommand::List(args) => execute(list(args)),
    }
}

/// The value: the first line of standard input, or typed at a prompt that doesn't echo.
fn read_value(name: &str) -> anyhow::Result<String> {
    let value = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("Value for {name} (not shown): ");
        let value = {
            let _quiet = NoEcho::start()?;
            super::stdin_line("the credential value")?
        };
        eprintln!();
        value
    } else {
        super::stdin_line("the credential value")?
    };
    anyhow::ensure!(!value.is_empty(), "the credential value is empty; give it on standard input");
    anyhow::ensure!(
        value.len() <= sealed::MAX_VALUE_BYTES,
        "the credential value is longer than {} bytes",
        sealed::MAX_VALUE_BYTES
    );
    Ok(value)
}

/// The terminal's echo, off while it lives.
struct NoEcho(rustix::termios::Termios);

impl NoEcho {
    fn start() -> anyhow::Result<NoEcho> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning the terminal's echo off")?;
        Ok(NoEcho(saved))
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.0);
    }
}

/// Seals `value` (`None`: the deletion) for every node of the gateway and sends it.
async fn send(args: CredentialArgs, value: Option<String>) -> anyhow::Result<()> {
    let CredentialArgs { name, gateway, trust, connection } = args;
    let client = connection.client()?;
    let view = client.credentials(&gateway).await?;
    let current = view.credentials.iter().find(|c| c.name == name);
    if value.is_none() && !current.is_some_and(|c| c.version.is_some() && !c.deleted) {
        anyhow::bail!(
            "gateway '{}' has no credential named {name:?}; list them with: gatehouse credential list --gateway {}",
            view.gateway_name,
            view.gateway_name
        );
    }
    let mut notes = trust_nodes(&view, &trust)?;
    let version = next_version(&view, &name);
    let mut sealed = Vec::new();
    for node in &view.nodes {
        if node.public_key.is_empty() {
            let _ = writeln!(
                notes,
                "Node {} has no peer-channel key at the hub yet (an older version?); it gets the credential from its peers.",
                node.name
            );
            continue;
        }
        let binding = Binding {
            gateway_id: &view.gateway_id,
            node_id: &node.node_id,
            name: &name,
            version,
            deleted: value.is_none(),
        };
        let ciphertext = sealed::seal(&node.public_key, &binding, value.as_deref())
            .with_context(|| format!("sealing the credential for node {}", node.name))?;
        sealed.push(NodeCiphertext { node_id: node.node_id.clone(), ciphertext });
    }
    let deleted = value.is_none();
    drop(value);
    anyhow::ensure!(
        !sealed.is_empty(),
        "gateway '{}' has no node to send the credential to; register one first (gatehouse node register)",
        view.gateway_name
    );
    let request = PutCredential { name: name.clone(), version, deleted, sealed };
    let answer = client.put_credential(&view.gateway_id, &request).await?;
    connection.answer(&answer, || {
        let what = if request.deleted { "deleted" } else { "set" };
        let _ = writeln!(
            notes,
            "credential {name:?} {what} on gateway '{}' (version {version}), sealed for {}; each node takes it with its next heartbeat. Check with: gatehouse credential list --gateway {}",
            view.gateway_name,
            if answer.nodes.is_empty() {
                "no node (a newer version is on its way)".to_owned()
            } else {
                answer.nodes.join(", ")
            },
            view.gateway_name
        );
        notes
    })
}

/// Checks the nodes' key proofs when the gateway encrypts (or `--roots` is given); the
/// sentence to print first when the keys are the hub's word alone.
fn trust_nodes(view: &GatewayCredentials, trust: &TrustArgs) -> anyhow::Result<String> {
    if !view.encryption && trust.roots.is_none() {
        return Ok(format!(
            "Gateway '{}' has no certificate: the nodes' keys are the ones the hub vouches for.\n",
            view.gateway_name
        ));
    }
    let extra_roots = super::roots_arg(trust.roots.as_deref())?;
    let options = crate::cert::Options {
        extra_roots,
        public_roots: !trust.no_system_roots,
        ..crate::cert::Options::default()
    };
    for node in view.nodes.iter().filter(|n| !n.public_key.is_empty()) {
        sealed::verify_proof(
            node.key_proof.as_ref(),
            &node.name,
            &view.gateway_id,
            &node.node_id,
            &node.public_key,
            &options,
        )?;
    }
    Ok(String::new())
}

/// Above every version the gateway reports or waits to take for `name`, and the clock.
fn next_version(view: &GatewayCredentials, name: &str) -> u64 {
    let reported = view.credentials.iter().filter(|c| c.name == name).filter_map(|c| c.version);
    let pending = view.pending.iter().filter(|p| p.name == name).map(|p| p.version);
    let newest = reported.chain(pending).max().unwrap_or(0);
    newest.saturating_add(1).max(crate::node::unix_millis())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let view = args.connection.client()?.credentials(&args.gateway).await?;
    let out = serde_json::json!({
        "gateway": view.gateway_name,
        "in_sync": view.in_sync,
        "credentials": view.credentials,
        "pending": view.pending,
    });
    args.connection.answer(&out, || render(&view))
}

/// The human view: one line a credential, then the nodes behind or ahead and why.
fn render(view: &GatewayCredentials) -> String {
    let mut out = String::new();
    if view.credentials.is_empty() && view.pending.is_empty() {
        let _ = writeln!(
            out,
            "Gateway '{}' has no credentials; set one with: gatehouse credential set NAME --gateway {}",
            view.gateway_name, view.gateway_name
        );
        return out;
    }
    let offline = |node: &str| view.nodes.iter().any(|n| n.name == node && n.status == NodeState::Offline);
    for credential in &view.credentials {
        let version =
            credential.version.map_or_else(|| "no valid version".to_owned(), |v| format!("version {v}"));
        let state = if credential.deleted { "deleted" } else { "set" };
        let origin = match credential.origin.as_str() {
            "" => String::new(),
            "admin" => " through the credential manager".to_owned(),
            node => format!(" on {node}"),
        };
        let sync = if credential.nodes_behind.is_empty() && credential.nodes_ahead.is_empty() {
            "in sync".to_owned()
        } else {
            "OUT OF SYNC".to_owned()
        };
        let _ = writeln!(out, "{}\t{version} ({state}{origin})\t{sync}", credential.name);
        for node in &credential.nodes_behind {
            let why = if offline(node) {
                "offline; it catches up when it is back"
            } else {
                "hasn't synced it yet (within seconds while it is online)"
            };
            let _ = writeln!(out, "  {node}: behind, {why}");
        }
        for node in &credential.nodes_ahead {
            let _ = writeln!(
                out,
                "  {node}: holds a version more than {} minutes ahead of the clock, which its peers refuse; fix that machine's clock and set the credential again",
                crate::credential_sync::CLOCK_ALLOWANCE_MS / 60_000
            );
        }
    }
    for pending in &view.pending {
        let what = if pending.deleted { "deletion" } else { "version" };
        let _ = writeln!(
            out,
            "{}\t{what} {} from the credential manager waiting at the hub for: {}",
            pending.name,
            pending.version,
            pending
                .nodes
                .iter()
                .map(|n| if offline(n) { format!("{n} (offline)") } else { n.clone() })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        out,
        "{}",
        if view.in_sync && view.pending.is_empty() {
            "Every node holds the same credentials."
        } else {
            "Not every node holds the same credentials yet."
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CredentialNode, GatewayCredential, PendingCredential};

    fn view() -> GatewayCredentials {
        let node = |name: &str, status| CredentialNode {
            node_id: format!("id-{name}"),
            name: name.to_owned(),
            status,
            public_key: String::new(),
            key_proof: None,
        };
        GatewayCredentials {
            gateway_id: "g".into(),
            gateway_name: "lake".into(),
            encryption: false,
            nodes: vec![node("n1", NodeState::Online), node("n2", NodeState::Offline)],
            credentials: vec![GatewayCredential {
                name: "db".into(),
                version: Some(5),
                origin: "admin".into(),
                deleted: false,
                nodes_current: vec!["n1".into()],
                nodes_behind: vec!["n2".into()],
                nodes_ahead: vec![],
            }],
            in_sync: false,
            pending: vec![PendingCredential {
                name: "db".into(),
                version: 9,
                deleted: false,
                nodes: vec!["n2".into()],
            }],
        }
    }

    #[test]
    fn the_next_version_is_above_what_nodes_hold_and_what_waits() {
        let view = view();
        assert!(next_version(&view, "db") >= 10);
        let mut ahead = view.clone();
        ahead.credentials[0].version = Some(u64::MAX - 1);
        assert_eq!(next_version(&ahead, "db"), u64::MAX);
        assert!(next_version(&view, "other") >= crate::node::unix_millis() - 1000);
    }

    #[test]
    fn the_list_names_who_is_behind_and_why() {
        let text = render(&view());
        assert!(text.contains("db\tversion 5 (set through the credential manager)\tOUT OF SYNC"), "{text}");
        assert!(text.contains("n2: behind, offline"), "{text}");
        assert!(text.contains("waiting at the hub for: n2 (offline)"), "{text}");
        assert!(text.contains("Not every node"), "{text}");
    }
}
