//! Gatehouse: a self-hosted data gateway. This library holds every part of the product; the
//! `gatehouse` binary only parses the command line and hands off to [`cli`].
//!
//! Dependencies point one way: `gui → node → transfer`, `node → cert`, `hub → cert`,
//! `cli → all`. Nothing outside `gui` knows that a GUI exists.

pub mod cert;
pub mod cli;
pub mod client;
pub mod encoding;
pub mod gui;
pub mod hub;
pub mod machine;
pub mod node;
pub mod paths;
pub mod protocol;
pub mod transfer;

/// This build's version, as nodes report it to the hub and the Help tab shows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
