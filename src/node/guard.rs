//! Keeps the peer port standing under abuse: a cap on connections still in their handshake,
//! overall and per remote address (beyond it a connection is closed at once), and a log of
//! refused connections that names each address at WARN at most once a minute, counting the
//! rest and summing them up. It owns no socket: `serve_peers` asks it before and after each
//! handshake.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections in their handshake at once, from everywhere.
pub const MAX_PENDING: usize = 64;
/// Connections in their handshake at once from one address: a genuine peer needs one or two
/// for a few milliseconds, so one noisy address can't hold every slot.
pub const MAX_PENDING_PER_ADDRESS: usize = 16;
/// An address is named at WARN at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Addresses remembered for rate limiting the log; beyond it refusals are only counted.
const MAX_REMEMBERED: usize = 4096;

#[derive(Default)]
struct State {
    pending: usize,
    per_address: HashMap<IpAddr, usize>,
    /// When each address was last named, and how many refusals since went unnamed.
    logged: HashMap<IpAddr, (Option<Instant>, u64)>,
    /// Refusals not named one by one (beyond MAX_REMEMBERED addresses).
    uncounted: u64,
    last_sweep: Option<Instant>,
}

/// The peer port's guard; cheap to clone.
#[derive(Clone, Default)]
pub struct Guard {
    // std Mutex, not tokio: never held across .await.
    state: Arc<Mutex<State>>,
}

/// A handshake slot, given back when dropped.
pub struct Slot {
    guard: Guard,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut state) = self.guard.state.lock() {
            state.pending = state.pending.saturating_sub(1);
            if let Some(count) = state.per_address.get_mut(&self.address) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.per_address.remove(&self.address);
                }
            }
        }
    }
}

impl Guard {
    /// A handshake slot for a connection from `address`, or `None` when the caps are reached
    /// (the caller closes the connection at once).
    pub fn admit(&self, address: IpAddr) -> Option<Slot> {
        let mut state = self.state.lock().ok()?;
        let mine = state.per_address.get(&address).copied().unwrap_or(0);
        if state.pending >= MAX_PENDING || mine >= MAX_PENDING_PER_ADDRESS {
            return None;
        }
        state.pending += 1;
        state.per_address.insert(address, mine + 1);
        Some(Slot { guard: self.clone(), address })
    }

    /// How many connections are in their handshake now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.state.lock().map_or(0, |s| s.pending)
    }

    /// Logs a refused connection: at WARN the first time in a minute for its address (with
    /// the count of those not logged before it), else only at DEBUG.
    pub fn refused(&self, address: IpAddr, reason: &dyn std::fmt::Display) {
        let Ok(mut state) = self.state.lock() else { return };
        let now = Instant::now();
        sweep(&mut state, now);
        let remembered = state.logged.len() < MAX_REMEMBERED || state.logged.contains_key(&address);
        if !remembered {
            state.uncounted += 1;
            tracing::debug!(%address, "peer channel: refused a connection: {reason}");
            return;
        }
        let entry = state.logged.entry(address).or_insert((None, 0));
        if entry.0.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            let unlogged = std::mem::replace(entry, (Some(now), 0)).1;
            if unlogged > 0 {
                tracing::warn!(%address, "peer channel: refused a connection: {reason} ({unlogged} more refused from this address in the last minute)");
            } else {
                tracing::warn!(%address, "peer channel: refused a connection: {reason}");
            }
        } else {
            entry.1 += 1;
            tracing::debug!(%address, "peer channel: refused a connection: {reason}");
        }
    }
}

/// Once a minute: sums up the refusals of addresses that went quiet before being named again,
/// and forgets them, so the log and the memory stay bounded.
fn sweep(state: &mut State, now: Instant) {
    if state.last_sweep.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
        return;
    }
    state.last_sweep = Some(now);
    let mut unlogged = std::mem::take(&mut state.uncounted);
    let mut addresses = 0;
    state.logged.retain(|_, (at, count)| {
        let keep = at.is_some_and(|at| now.duration_since(at) < LOG_EVERY);
        if !keep && *count > 0 {
            unlogged += *count;
            addresses += 1;
        }
        keep
    });
    if unlogged > 0 {
        tracing::warn!(
            "peer channel: {unlogged} more connections refused in the last minutes from {addresses} addresses (not logged one by one)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_overall_and_per_address_and_given_back() {
        let guard = Guard::default();
        let one: IpAddr = [127, 0, 0, 2].into();
        let held: Vec<Slot> = (0..MAX_PENDING_PER_ADDRESS).map(|_| guard.admit(one).unwrap()).collect();
        assert!(guard.admit(one).is_none(), "one address took more than its share");
        let mut others = Vec::new();
        for i in 0..(MAX_PENDING - MAX_PENDING_PER_ADDRESS) {
            let address: IpAddr =
                [10, 0, u8::try_from(i / 200).unwrap(), u8::try_from(i % 200).unwrap()].into();
            others.push(guard.admit(address).unwrap());
        }
        assert!(guard.admit([192, 0, 2, 1].into()).is_none(), "more than the cap pending");
        drop(held);
        assert_eq!(guard.pending(), MAX_PENDING - MAX_PENDING_PER_ADDRESS);
        assert!(guard.admit(one).is_some());
        drop(others);
        assert_eq!(guard.pending(), 0);
    }

    #[test]
    fn refusals_are_counted_per_address() {
        let guard = Guard::default();
        let address: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..10 {
            guard.refused(address, &"nope");
        }
        let state = guard.state.lock().unwrap();
        assert_eq!(state.logged[&address].1, 9, "only the first refusal in a minute is named");
    }
}
