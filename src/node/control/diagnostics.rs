//! The connection tests the service runs when the window or the control socket asks
//! (`NodeCommand::TestConnections`): the hub's health and a ping of every peer over the peer
//! channel, side by side, each within [`CONNECTION_TEST_TIMEOUT`], as sentences.

use super::wire::{CONNECTION_TEST_TIMEOUT, ConnectionTest};
use crate::node::{Shared, ask_peer, peer};
use crate::protocol::Peer;
use std::sync::Arc;
use std::time::Instant;

/// Times the hub and every peer, side by side, each within [`CONNECTION_TEST_TIMEOUT`];
/// the hub first, then the peers in the order given.
pub(crate) async fn run_connection_tests(shared: Arc<Shared>, peers: Vec<Peer>) -> Vec<ConnectionTest> {
    let mut tasks = Vec::with_capacity(peers.len() + 1);
    let hub = Arc::clone(&shared);
    tasks.push(tokio::spawn(async move { test_hub(&hub).await }));
    for peer in peers {
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move { test_peer(&shared, &peer).await }));
    }
    let mut tests = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(test) = task.await {
            tests.push(test);
        }
    }
    let failed: Vec<&str> = tests.iter().filter(|t| !t.ok).map(|t| t.target.as_str()).collect();
    if failed.is_empty() {
        tracing::info!("connection tests: all {} answered", tests.len());
    } else {
        tracing::info!(
            "connection tests: {} of {} answered; no answer from {}",
            tests.len() - failed.len(),
            tests.len(),
            failed.join(", ")
        );
    }
    tests
}

async fn test_hub(shared: &Shared) -> ConnectionTest {
    let address = shared.settings.hub_url.trim_end_matches('/').to_owned();
    let started = Instant::now();
    let outcome = tokio::time::timeout(CONNECTION_TEST_TIMEOUT, shared.client.healthy()).await;
    let millis = elapsed_millis(started);
    let (ok, message) = match outcome {
        Ok(Ok(true)) => (true, format!("answered in {millis} ms")),
        Ok(Ok(false)) => (false, "it answered, but says it isn't healthy; see the hub's log".to_owned()),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, no_answer_in_time()),
    };
    ConnectionTest { target: "hub".to_owned(), address, ok, millis, message }
}

async fn test_peer(shared: &Shared, peer: &Peer) -> ConnectionTest {
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        CONNECTION_TEST_TIMEOUT,
        ask_peer(shared, &peer.peer_address, &peer::PeerRequest::Ping),
    )
    .await;
    let millis = elapsed_millis(started);
    let (ok, message) = match outcome {
        Ok(Ok(peer::PeerResponse::Pong)) => (true, format!("answered in {millis} ms")),
        Ok(Ok(other)) => {
            (false, format!("it answered a ping with something else ({other:?}); is it another version?"))
        }
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, no_answer_in_time()),
    };
    ConnectionTest { target: peer.name.clone(), address: peer.peer_address.clone(), ok, millis, message }
}

fn no_answer_in_time() -> String {
    format!("no answer within {} s", CONNECTION_TEST_TIMEOUT.as_secs())
}

fn elapsed_millis(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
