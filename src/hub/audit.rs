//! The audit trail: who (the admin token, a node) did what at the hub and when. Entries carry names, slots and settings, never a token, key or credential value.

use super::HubState;
use super::db::{AuditRow, GatewayRow, now_ms};
use crate::protocol::AuditEntry;

/// Who acted.
#[derive(Debug, Clone)]
pub enum Actor {
    /// Whoever holds the hub's admin token.
    Admin,
    /// A node, by name (registering with an auth key, or with its node token).
    Node(String),
    /// A credential-manager token, by id.
    CredentialManager(String),
}

impl Actor {
    fn name(&self) -> String {
        match self {
            Actor::Admin => "admin".to_owned(),
            Actor::Node(name) => format!("node {name}"),
            Actor::CredentialManager(id) => format!("credential manager token {id}"),
        }
    }
}

/// Records what `actor` did, about `gateway` if any. The action has happened by now, so a
/// failure to record it is logged, not returned: the caller's answer stays true.
pub async fn record(
    state: &HubState,
    gateway: Option<&GatewayRow>,
    actor: Actor,
    action: &str,
    detail: String,
) {
    let entry = AuditRow {
        at_ms: now_ms(),
        gateway_id: gateway.map(|g| g.id.clone()),
        gateway_name: gateway.map(|g| g.name.clone()),
        actor: actor.name(),
        action: action.to_owned(),
        detail,
    };
    if let Err(e) = state.db.record_audit(&entry).await {
        tracing::warn!(action, "couldn't add to the audit trail: {e}");
    }
}

pub fn view(row: AuditRow) -> AuditEntry {
    AuditEntry {
        at_ms: row.at_ms,
        gateway_id: row.gateway_id,
        gateway_name: row.gateway_name,
        actor: row.actor,
        action: row.action,
        detail: row.detail,
    }
}
