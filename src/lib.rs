//! Gatehouse: a self-hosted data gateway. This library holds every part of the product; the
//! `gatehouse` binary only parses the command line and hands off to [`cli`].
//!
//! Dependencies point one way: `cli → host → {hub, node}`, `gui → host, node`,
//! `node → transfer, cert`, `hub → cert`; `hub` and `node` share only [`protocol`] and
//! neutral helpers ([`machine`], [`credential_sync`]). Nothing outside `gui` (and the CLI's
//! entry point, which opens the window) knows that a GUI exists. `tests/tidy.rs` checks these
//! arrows.

pub mod cert;
pub mod cli;
pub mod client;
pub mod credential_sync;
pub mod encoding;
pub mod gui;
pub mod host;
pub mod hub;
pub mod machine;
pub mod node;
pub mod paths;
pub mod protocol;
pub mod transfer;

/// This build's version, as nodes report it to the hub and the Help tab shows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
