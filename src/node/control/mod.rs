//! The node's local control socket, `<data dir>/control.sock`: how the Configuration Manager
//! attaches to a `gatehouse node run` of the same data dir, and how `gatehouse node status`
//! asks it. It owns the socket file (owner-only, removed on shutdown, a stale one from a
//! killed service replaced), its newline-delimited JSON protocol (one request per connection),
//! the server and the client, and the connection tests the service runs for it. It must not
//! reach beyond this machine: it is a Unix socket, and every connection is checked to come
//! from the user that owns the socket, root, or (for a service started with a control group,
//! as the system unit is) a member of that group ([`access`]).
//!
//! [`wire`] is the protocol (requests, events, errors, framing), [`server`] binds and serves
//! the socket, [`client`] talks to it, [`diagnostics`] runs the connection tests, [`access`]
//! decides who may connect.

pub mod access;
mod client;
mod diagnostics;
mod server;
mod wire;

pub use access::ControlGroup;
pub use client::{ControlClient, ServiceDir, find_service, is_same_dir};
pub(crate) use diagnostics::run_connection_tests;
pub use server::{ControlSocket, ControlTarget, serve};
pub use wire::{
    ANSWER_TIMEOUT, CONNECTION_TEST_TIMEOUT, ConnectionTest, ControlError, ControlEvent, ControlRequest,
    Hello, MAX_FRAME_BYTES, MAX_JOBS, SOCKET_FILE, socket_path,
};
