//! What the window knows about the node, built only from the service's events: settings,
//! service state, the latest status, a short metrics history for the plots, and recent log
//! lines. Drawing reads it; nothing else writes it.

use super::service::{Event, ServiceState};
use crate::host::hub_access::Reach;
use crate::node::NodeStatus;
use crate::node::add_node::AddNode;
use crate::node::control::ConnectionTest;
use crate::node::logs::LogLine;
use crate::node::store::NodeSettings;
use std::collections::VecDeque;
use std::path::PathBuf;

/// How many metric samples the plots keep (one per heartbeat: two minutes).
pub const HISTORY: usize = 120;
/// How many log lines the Diagnostics tab keeps.
pub const LOG_LINES: usize = 5_000;

/// One heartbeat's worth of this node's load, for the plots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub network_in: f64,
    pub network_out: f64,
}

/// The window's picture of the node.
#[derive(Default)]
pub struct State {
    /// The service thread has looked at the data dir.
    pub loaded: bool,
    pub data_dir: Option<PathBuf>,
    pub settings: Option<NodeSettings>,
    pub service: ServiceState,
    pub status: Option<NodeStatus>,
    pub history: VecDeque<Sample>,
    pub logs: VecDeque<LogLine>,
    /// The last connection tests, and whether new ones are under way.
    pub tests: Option<Vec<ConnectionTest>>,
    pub testing: bool,
    /// The gateway's recent jobs as last fetched (or why not), when, and whether a fetch is
    /// under way.
    pub jobs: Option<Result<Vec<crate::protocol::JobView>, String>>,
    pub jobs_fetched: Option<std::time::Instant>,
    pub jobs_pending: bool,
    /// Add a node's answers (Settings).
    pub add_node: AddNodeState,
}

/// What Settings' Add a node shows.
#[derive(Default)]
pub struct AddNodeState {
    /// The last answer (a key, the limit's sentence, the admin's command, or why none), and
    /// whether one is asked for.
    pub answer: Option<Result<AddNode, String>>,
    pub asking: bool,
    /// Where this data dir's embedded hub is reached (`None`: it hosts none), the answer to
    /// the last move, and whether a move is under way.
    pub reach: Option<Reach>,
    pub moved: Option<Result<String, String>>,
    pub moving: bool,
}

impl State {
    /// Takes in one event from the service.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Loaded { data_dir, settings } => {
                self.loaded = true;
                self.data_dir = Some(data_dir);
                self.settings = settings;
            }
            Event::Registered(settings) | Event::Settings(settings) => self.settings = Some(settings),
            Event::Service(service) => {
                if matches!(service, ServiceState::Stopped { .. } | ServiceState::Unregistered) {
                    self.status = None;
                }
                self.service = service;
            }
            // A status that was on its way when the service stopped is stale: drop it.
            Event::Status(_)
                if matches!(self.service, ServiceState::Stopped { .. } | ServiceState::Unregistered) => {}
            Event::Status(status) => {
                self.record(&status);
                self.status = Some(*status);
            }
            Event::Log(line) => {
                if self.logs.len() == LOG_LINES {
                    self.logs.pop_front();
                }
                self.logs.push_back(line);
            }
            Event::Tested(tests) => {
                self.testing = false;
                self.tests = Some(tests);
            }
            Event::Jobs(jobs) => {
                self.jobs = Some(jobs);
                self.jobs_fetched = Some(std::time::Instant::now());
                self.jobs_pending = false;
            }
            Event::AddNode(answer) => {
                self.add_node.answer = Some(answer);
                self.add_node.asking = false;
            }
            Event::HubReach(reach) => self.add_node.reach = reach,
            Event::HubAccess(answer) => {
                self.add_node.moved = Some(answer);
                self.add_node.moving = false;
            }
            Event::SetupFailed { .. } | Event::Done { .. } => {}
        }
    }

    /// Adds a sample when the status carries a new heartbeat.
    fn record(&mut self, status: &NodeStatus) {
        let Some(at) = status.last_heartbeat else { return };
        #[allow(clippy::cast_precision_loss, reason = "plots need no more precision")]
        let at = at as f64;
        if self.history.back().is_some_and(|s| s.at >= at) {
            return;
        }
        let m = &status.metrics;
        #[allow(clippy::cast_precision_loss, reason = "plots need no more precision")]
        let memory_percent = if m.total_memory_bytes == 0 {
            0.0
        } else {
            100.0 * (1.0 - m.available_memory_bytes as f64 / m.total_memory_bytes as f64)
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        #[allow(clippy::cast_precision_loss, reason = "plots need no more precision")]
        self.history.push_back(Sample {
            at,
            cpu_percent: f64::from(m.cpu_percent),
            memory_percent,
            network_in: m.network_in_bytes_per_second as f64,
            network_out: m.network_out_bytes_per_second as f64,
        });
    }

    /// The service runs (here or in a `node run` process) and can take commands.
    pub fn running(&self) -> bool {
        matches!(self.service, ServiceState::Running | ServiceState::Attached { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(heartbeat: u64, cpu: f32) -> Box<NodeStatus> {
        let mut status = NodeStatus { last_heartbeat: Some(heartbeat), ..NodeStatus::default() };
        status.metrics.cpu_percent = cpu;
        status.metrics.total_memory_bytes = 1000;
        status.metrics.available_memory_bytes = 250;
        Box::new(status)
    }

    #[test]
    fn one_sample_per_heartbeat_and_at_most_history() {
        let mut state = State::default();
        state.apply(Event::Service(ServiceState::Running));
        state.apply(Event::Status(status(1, 10.0)));
        state.apply(Event::Status(status(1, 20.0)));
        assert_eq!(state.history.len(), 1, "a status without a new heartbeat added a sample");
        assert!((state.history[0].memory_percent - 75.0).abs() < 1e-9);
        let last: u32 = 130;
        for beat in 2..=last {
            state.apply(Event::Status(status(u64::from(beat), 5.0)));
        }
        assert_eq!(state.history.len(), HISTORY);
        assert!((state.history.back().unwrap().at - f64::from(last)).abs() < 1e-9);
    }

    #[test]
    fn a_status_arriving_after_stop_is_dropped() {
        let mut state = State::default();
        state.apply(Event::Service(ServiceState::Running));
        state.apply(Event::Status(status(1, 10.0)));
        state.apply(Event::Service(ServiceState::Stopped { reason: None }));
        assert!(state.status.is_none());
        state.apply(Event::Status(status(2, 10.0)));
        assert!(state.status.is_none(), "a stopped service shows a status");
        state.apply(Event::Service(ServiceState::Running));
        state.apply(Event::Status(status(3, 10.0)));
        assert!(state.status.is_some());
    }
}
