//! Page tests of the Home tab (kept beside `home.rs`, whose drawing other work changes):
//! Start and Stop through the outbox, what the summary says of the hub, and the credentials
//! column's words.

use super::{credential_text, home_ui};
use crate::gui::service::{Request, ServiceState};
use crate::gui::state::State;
use crate::gui::testing::{self, Alone, click, sent, shows};
use crate::protocol::GatewayCredential;

fn tab(state: State) -> testing::Page<()> {
    testing::page((), state, |ui, alone: &mut Alone<()>| home_ui(ui, &alone.state, &alone.outbox))
}

#[test]
fn start_and_stop_are_asked_through_the_outbox_and_not_while_the_service_changes() {
    let stopped = State {
        service: ServiceState::Stopped { reason: Some("port 8060 is taken by another program".to_owned()) },
        status: None,
        ..testing::running()
    };
    let mut harness = tab(stopped);
    assert!(shows(&harness, "Service: stopped"));
    assert!(shows(&harness, "port 8060 is taken by another program"), "why it stopped isn't shown");
    assert!(shows(&harness, "Node 'n1' of gateway 'gw' (hub http://127.0.0.1:9)."));
    click(&mut harness, "Start");
    assert!(matches!(sent(&harness).as_slice(), [Request::Start]));

    harness.state_mut().state.service = ServiceState::Starting;
    harness.step();
    click(&mut harness, "Start");
    assert!(sent(&harness).is_empty(), "Start was asked for while the service starts");

    harness.state_mut().state = testing::running();
    harness.step();
    assert!(shows(&harness, "Service: running"));
    click(&mut harness, "Stop");
    assert!(matches!(sent(&harness).as_slice(), [Request::Stop]));
}

#[test]
fn the_summary_says_why_the_hub_is_not_reached() {
    let mut state = testing::running();
    let status = state.status.as_mut().unwrap();
    status.hub_connected = false;
    status.hub_error = Some("connection refused".to_owned());
    let harness = tab(state);
    assert!(shows(&harness, "not connected: connection refused"), "the hub's error isn't shown");
    assert!(shows(&harness, "No run is executing here right now."));
}

#[test]
fn the_credentials_column_names_what_a_node_is_behind_on() {
    let lake = GatewayCredential {
        name: "lake".into(),
        version: Some(5),
        origin: "a".into(),
        deleted: false,
        nodes_current: vec!["a".into()],
        nodes_behind: vec!["b".into()],
        nodes_ahead: vec!["c".into()],
    };
    let list = [lake];
    assert_eq!(credential_text(&list, false, "b", true), "Behind on lake");
    assert_eq!(credential_text(&list, false, "c", true), "Ahead of the clock: lake");
    assert_eq!(credential_text(&list, false, "a", true), "Up to date; others are behind");
    assert_eq!(credential_text(&[], true, "a", true), "In sync");
    assert_eq!(credential_text(&[], true, "d", false), "Unknown (offline)");
}

#[test]
fn home_says_which_service_the_window_is_attached_to() {
    let system = State {
        service: ServiceState::Attached { pid: 4242, data_dir: "/var/lib/gatehouse".into(), system: true },
        ..testing::running()
    };
    let mut harness = tab(system);
    assert!(shows(
        &harness,
        "Service: attached to the system service gatehouse-node (pid 4242, /var/lib/gatehouse)"
    ));
    click(&mut harness, "Stop");
    assert!(matches!(sent(&harness).as_slice(), [Request::Stop]), "the system service can't be stopped");

    harness.state_mut().state.service = ServiceState::Attached {
        pid: 77,
        data_dir: "/home/ann/.local/share/gatehouse".into(),
        system: false,
    };
    harness.step();
    assert!(shows(&harness, "Service: attached to gatehouse node run (pid 77)"));
    assert!(!shows(&harness, "system service"));

    harness.state_mut().state = testing::running();
    harness.step();
    assert!(shows(&harness, "Service: running in this window"));
    assert!(!shows(&harness, "attached"));
}
