//! The registration rules of DESIGN.md §2, as one pure check over what is stored. Each
//! refusal is a specific sentence that says what to do, with an [`ErrorCode`] on the wire.

use super::db::{GatewayRow, NewNode, NodeRow};
use super::error::ApiError;
use super::status::{compare_versions, majority_version};
use crate::protocol::ErrorCode;
use std::cmp::Ordering;

/// Why a node may not register.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "node '{name}' is already registered with gateway '{gateway}'; choose another name (names are never reused while that node exists)"
    )]
    NameTaken { name: String, gateway: String },
    /// The machine is a node of another gateway. The refusal doesn't say which, or as whom:
    /// whoever holds this gateway's key has no business learning another gateway's nodes.
    #[error(
        "this machine is already a node of another gateway on this hub; run `gatehouse node unregister` on it first (or ask the hub's administrator to remove that node)"
    )]
    MachineElsewhere,
    #[error(
        "this machine is already registered with gateway '{gateway}' as '{name}'; unregister it first to register again"
    )]
    MachineAlreadyHere { name: String, gateway: String },
    #[error("version {node} is older than the gateway version {gateway}; upgrade this node first")]
    TooOld { node: String, gateway: String },
    #[error(
        "gateway '{gateway}' already has {count} nodes (at most {max}); remove a node or raise max_nodes"
    )]
    Full { gateway: String, count: usize, max: u32 },
    #[error(
        "gateway '{gateway}' encrypts traffic between its nodes, so express setup (no encryption) can't join it; use manual setup with the gateway's certificate"
    )]
    NeedsEncryption { gateway: String },
    #[error(
        "gateway '{gateway}' doesn't encrypt traffic between its nodes, and its encryption can change only while it has a single node; register without a certificate, or turn encryption on while it has one node"
    )]
    EncryptionModeLocked { gateway: String },
}

impl Refusal {
    /// The code that names this refusal on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::NameTaken { .. } => ErrorCode::NameTaken,
            Refusal::MachineElsewhere => ErrorCode::MachineElsewhere,
            Refusal::MachineAlreadyHere { .. } => ErrorCode::MachineAlreadyHere,
            Refusal::TooOld { .. } => ErrorCode::TooOld,
            Refusal::Full { .. } => ErrorCode::GatewayFull,
            Refusal::NeedsEncryption { .. } => ErrorCode::NeedsEncryption,
            Refusal::EncryptionModeLocked { .. } => ErrorCode::EncryptionModeLocked,
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::conflict(refusal.to_string()).with_code(refusal.code())
    }
}

/// Checks every registration rule; `existing` is the node this machine already is, if any.
pub fn check(
    gateway: &GatewayRow,
    nodes: &[NodeRow],
    existing: Option<(&NodeRow, &str)>,
    new: &NewNode,
) -> Result<(), Refusal> {
    if let Some((existing, existing_gateway)) = existing {
        return Err(if existing.gateway_id == gateway.id {
            Refusal::MachineAlreadyHere { name: existing.name.clone(), gateway: existing_gateway.to_owned() }
        } else {
            Refusal::MachineElsewhere
        });
    }
    if nodes.iter().any(|n| n.name.eq_ignore_ascii_case(&new.name)) {
        return Err(Refusal::NameTaken { name: new.name.clone(), gateway: gateway.name.clone() });
    }
    if let Some(version) = majority_version(nodes)
        && compare_versions(&new.version, &version) == Ordering::Less
    {
        return Err(Refusal::TooOld { node: new.version.clone(), gateway: version });
    }
    if nodes.len() >= usize::try_from(gateway.settings.max_nodes).unwrap_or(usize::MAX) {
        return Err(Refusal::Full {
            gateway: gateway.name.clone(),
            count: nodes.len(),
            max: gateway.settings.max_nodes,
        });
    }
    if !nodes.is_empty() {
        match (gateway.encryption, new.encryption_thumbprint.is_some()) {
            (true, false) => return Err(Refusal::NeedsEncryption { gateway: gateway.name.clone() }),
            (false, true) => return Err(Refusal::EncryptionModeLocked { gateway: gateway.name.clone() }),
            _ => {}
        }
    }
    Ok(())
}
