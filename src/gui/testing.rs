//! What the page tests share: a page drawn alone on a hand-made [`State`], with an outbox and
//! a worker of its own and no service thread, so a test clicks and types through AccessKit
//! labels and reads the requests the page pushed.
#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;

use super::ops::Op;
use super::outbox::Outbox;
use super::service::{Request, ServiceState};
use super::state::State;
use super::worker::{self, Worker};
use crate::node::NodeStatus;
use crate::node::store::NodeSettings;
use std::time::{Duration, Instant};

/// A page's (or a section's) own state beside what it draws from.
pub struct Alone<P> {
    pub page: P,
    pub state: State,
    pub outbox: Outbox,
    pub worker: Worker,
}

pub type Page<P> = Harness<'static, Alone<P>>;

/// `page` drawn by `draw` on `state`, one frame in. The screen is tall enough for a whole
/// page: clicks land by position, so every widget must be on it.
pub fn page<P: 'static>(page: P, state: State, draw: fn(&mut egui::Ui, &mut Alone<P>)) -> Page<P> {
    let alone = Alone { page, state, outbox: Outbox::default(), worker: Worker::default() };
    let mut harness = Harness::builder().with_size(egui::vec2(1100.0, 1600.0)).build_ui_state(draw, alone);
    harness.step();
    harness
}

/// Clicks the widget labelled `label` and lets the page draw what follows. A grid drawn for
/// the first time is measured in one frame and shown in the next, moving what is under it:
/// the page settles first, so the click lands where the widget stays.
pub fn click<P>(harness: &mut Page<P>, label: &str) {
    harness.run_steps(2);
    harness.get_by_label(label).click();
    harness.step();
    harness.step();
}

/// Focuses the field labelled `label` and types `text` at its end.
pub fn type_into<P>(harness: &mut Page<P>, label: &str, text: &str) {
    harness.get_by_label(label).focus();
    harness.step();
    harness.get_by_label(label).type_text(text);
    harness.step();
    harness.step();
}

/// What the page asked for since the last look, oldest first.
pub fn sent<P>(harness: &Page<P>) -> Vec<Request> {
    harness.state().outbox.drain()
}

/// The one operation the page asked for since the last look; fails when it asked for
/// nothing, for several things, or for something else.
pub fn asked_op<P>(harness: &Page<P>) -> Op {
    let mut asked = sent(harness);
    match (asked.pop(), asked.len()) {
        (Some(Request::Op(op)), 0) => op,
        (None, _) => panic!("the page asked for nothing"),
        (Some(_), 0) => panic!("the page asked for something other than an operation"),
        (Some(_), more) => panic!("the page asked for {} things", more + 1),
    }
}

/// Whether a widget whose label contains `text` is drawn.
pub fn shows<P>(harness: &Page<P>, text: &str) -> bool {
    harness.query_all_by_label_contains(text).next().is_some()
}

/// The worker's answer to what the page sent it (a real check or dialog on its thread),
/// waited for at most ten seconds.
pub fn worker_answer<P>(harness: &Page<P>) -> worker::Answer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(worker::Event::For(_, answer)) = harness.state().worker.try_recv() {
            return answer;
        }
        assert!(Instant::now() < deadline, "the worker didn't answer within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The settings of node `n1`, registered with gateway `gw`.
pub fn settings() -> NodeSettings {
    NodeSettings {
        hub_url: "http://127.0.0.1:9".to_owned(),
        gateway_id: "g1".to_owned(),
        gateway_name: "gw".to_owned(),
        node_id: "n1-id".to_owned(),
        node_name: "n1".to_owned(),
        peer_port: 8060,
        peer_address: "127.0.0.1:8060".to_owned(),
        concurrency_limit: None,
        log_level: "info".to_owned(),
        proxy: None,
        hub_ca: None,
        hub_pin: None,
        metrics_listen: None,
        auto_update: None,
    }
}

/// The status of `n1` once its service reached the hub.
pub fn status() -> NodeStatus {
    let mut status = NodeStatus {
        node_name: "n1".to_owned(),
        gateway_name: "gw".to_owned(),
        hub_url: "http://127.0.0.1:9".to_owned(),
        hub_connected: true,
        last_heartbeat: Some(1),
        ..NodeStatus::default()
    };
    status.metrics.runs_limit = 8;
    status.metrics.total_memory_bytes = 8 << 30;
    status
}

/// A registered node whose service runs here and reached the hub.
pub fn running() -> State {
    State {
        loaded: true,
        settings: Some(settings()),
        service: ServiceState::Running,
        status: Some(status()),
        ..State::default()
    }
}
