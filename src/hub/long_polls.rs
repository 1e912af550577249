//! How many claims each node has waiting on this hub: a node token may hold only a few long
//! polls at once, so one node (or a stolen token) can't tie up the hub with waiting requests.
//! Counts are per hub process, as the waits are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Waiting claims one node may hold on one hub. A dispatcher waits on one at a time.
pub const MAX_PER_NODE: usize = 2;

#[derive(Default)]
pub struct LongPolls {
    // std Mutex, not tokio: never held across .await.
    waiting: Mutex<HashMap<String, usize>>,
}

/// A waiting claim; counted until dropped.
pub struct Waiting {
    polls: Arc<LongPolls>,
    node_id: String,
}

impl LongPolls {
    /// Counts a new waiting claim of `node_id`, or `None` when it holds [`MAX_PER_NODE`].
    pub fn enter(self: &Arc<Self>, node_id: &str) -> Option<Waiting> {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = waiting.entry(node_id.to_owned()).or_default();
        if *count >= MAX_PER_NODE {
            return None;
        }
        *count += 1;
        Some(Waiting { polls: Arc::clone(self), node_id: node_id.to_owned() })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiting = self.polls.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = waiting.get_mut(&self.node_id) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.node_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_holds_at_most_the_limit_and_a_finished_wait_frees_its_place() {
        let polls = Arc::new(LongPolls::default());
        let held: Vec<Waiting> = (0..MAX_PER_NODE).map(|_| polls.enter("a").unwrap()).collect();
        assert!(polls.enter("a").is_none());
        assert!(polls.enter("b").is_some(), "another node has its own count");
        drop(held);
        assert!(polls.enter("a").is_some());
        assert!(polls.waiting.lock().unwrap().is_empty(), "no count is left behind");
    }
}
