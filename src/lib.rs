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
pub mod pinned_tls;
pub mod prometheus;
pub mod protocol;
pub mod release;
pub mod transfer;

/// This build's version as Cargo knows it. What a running process reports is [`version`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The start of [`FAKE_VERSION_SLOT`]: tests find it in a COPY of the built binary and write a
/// version after it (NUL-terminated, at most [`FAKE_VERSION_MAX`] bytes).
pub const FAKE_VERSION_MARKER: &[u8] = b"GATEHOUSE-TEST-ONLY-VERSION-OVERRIDE=";
/// The longest version a test can write into the slot.
pub const FAKE_VERSION_MAX: usize = 26;

/// Test-only version override: a fixed-size slot in the binary, the marker followed by NULs.
/// A test that needs "a newer build" patches a version into a copy of the built binary (no
/// second cargo build); that copy then reports it, and says "FAKE version" in its log. An
/// untouched binary reports [`VERSION`].
static FAKE_VERSION_SLOT: [u8; 64] = fake_slot();

const fn fake_slot() -> [u8; 64] {
    let mut slot = [0u8; 64];
    let mut i = 0;
    while i < FAKE_VERSION_MARKER.len() {
        slot[i] = FAKE_VERSION_MARKER[i];
        i += 1;
    }
    slot
}

/// The version patched into this binary's test-only slot, if a test did.
pub fn fake_version() -> Option<&'static str> {
    static FAKE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FAKE.get_or_init(|| {
        // black_box: read at run time, never folded to the NULs the source has.
        let slot: &[u8; 64] = std::hint::black_box(&FAKE_VERSION_SLOT);
        let tail = slot.get(FAKE_VERSION_MARKER.len()..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let text = std::str::from_utf8(tail.get(..end)?).ok()?.trim();
        (!text.is_empty()).then(|| text.to_owned())
    })
    .as_deref()
}

/// The version this process reports to the hub, its peers and its control socket: [`VERSION`],
/// unless a test patched its slot ([`fake_version`]).
pub fn version() -> &'static str {
    fake_version().unwrap_or(VERSION)
}
