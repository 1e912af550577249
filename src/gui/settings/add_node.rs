//! The "Add a node" section: who can reach the embedded hub (this machine only, or other
//! machines too over HTTPS with the certificate it makes for itself), and a button that asks
//! the service for a fresh one-time key, shown with the steps for the other machine; a full
//! gateway shows the hub's limit sentence instead, a node without the hub's admin token the
//! command its admin runs.

use eframe::egui;

use crate::gui::outbox::Outbox;
use crate::gui::service::Request;
use crate::gui::state::State;
use crate::gui::widgets;
use crate::host::hub_access::Access;
use crate::node::add_node::{AddNode, LOCAL_ONLY, NodeKey};

/// The section's own state: the network address as typed (empty: the machine's own).
#[derive(Default)]
pub struct AddNodeSection {
    pub address: String,
}

impl AddNodeSection {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &State, outbox: &Outbox) {
        self.hub_ui(ui, state, outbox);
        ui.add_space(8.0);
        let pending = state.add_node.asking.then_some("Asking the hub for a key…");
        if widgets::pending_button(ui, state.running(), "Make a key for a new node", pending) {
            outbox.send(Request::AddNodeKey);
        }
        if !state.running() {
            widgets::warning(ui, "Start the node service first: the key comes from the hub through it.");
        }
        match &state.add_node.answer {
            None => {}
            Some(Ok(AddNode::Key(key))) => key_ui(ui, key),
            Some(Ok(AddNode::Full(sentence)) | Err(sentence)) => widgets::problem(ui, sentence),
            Some(Ok(AddNode::AskTheAdmin { command })) => {
                widgets::paragraph(
                    ui,
                    "This node doesn't hold its hub's admin token, so it can't make a key. On the hub admin's machine, run:",
                );
                copyable(ui, "Command for the hub's admin", command);
            }
        }
    }

    /// Where the embedded hub listens, and the switch that moves it.
    fn hub_ui(&mut self, ui: &mut egui::Ui, state: &State, outbox: &Outbox) {
        let Some(reach) = &state.add_node.reach else {
            let hub = state.settings.as_ref().map_or("", |s| s.hub_url.as_str());
            widgets::paragraph(
                ui,
                &format!("This node's hub runs elsewhere ({hub}); new nodes join it there."),
            );
            return;
        };
        let pending = state.add_node.moving.then_some("Moving the hub…");
        if let Some(pin) = &reach.pin {
            widgets::paragraph(
                ui,
                &format!(
                    "The embedded hub listens on {} for other machines too, over HTTPS with a certificate it made for itself (SHA-256 {pin}).",
                    reach.url
                ),
            );
            if widgets::pending_button(ui, true, "Keep the hub to this machine", pending) {
                outbox.send(Request::HubAccess(Access::Local));
            }
        } else {
            widgets::paragraph(
                ui,
                &format!(
                    "The embedded hub listens on {} for this machine only. Open it to other machines to add nodes there: it then listens on this machine's network address over HTTPS.",
                    reach.url
                ),
            );
            egui::Grid::new("hub-address").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
                widgets::text_field(
                    ui,
                    "Network address",
                    &mut self.address,
                    "IP or IP:PORT (empty: this machine's address)",
                    false,
                );
                ui.end_row();
            });
            let typed = parse_address(&self.address);
            if let Err(problem) = &typed {
                widgets::problem(ui, problem);
            }
            if widgets::pending_button(ui, typed.is_ok(), "Open to other machines", pending)
                && let Ok(address) = typed
            {
                outbox.send(Request::HubAccess(Access::Network(address)));
            }
        }
        match &state.add_node.moved {
            Some(Ok(sentence)) => widgets::paragraph(ui, sentence),
            Some(Err(sentence)) => widgets::problem(ui, sentence),
            None => {}
        }
    }
}

/// The address as typed: empty for the machine's own, an IP, or IP:PORT.
fn parse_address(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 0)))
        .map(Some)
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT."))
}

/// The key, a copy button, and the steps for the other machine.
fn key_ui(ui: &mut egui::Ui, key: &NodeKey) {
    widgets::paragraph(
        ui,
        &format!("A one-time key for a new node of gateway '{}' (shown only this once):", key.gateway),
    );
    copyable(ui, "New node's key", &key.key);
    if key.hub_is_local() {
        widgets::warning(ui, LOCAL_ONLY);
    }
    ui.label(egui::RichText::new("On the other machine").strong());
    for (n, step) in key.steps().iter().enumerate() {
        widgets::paragraph(ui, &format!("{}. {step}", n + 1));
    }
}

/// `text` in a read-only field (selectable) with a button that copies it.
fn copyable(ui: &mut egui::Ui, label: &str, text: &str) {
    ui.horizontal(|ui| {
        let mut shown = text;
        widgets::field(ui, label, egui::TextEdit::singleline(&mut shown), 620.0);
        if ui.button(format!("Copy {}", label.to_lowercase())).clicked() {
            ui.ctx().copy_text(text.to_owned());
        }
    });
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, click, sent, shows, type_into};
    use crate::host::hub_access::Reach;
    use crate::protocol::CertPin;
    use egui_kittest::kittest::Queryable as _;

    fn section(state: State) -> testing::Page<AddNodeSection> {
        testing::page(AddNodeSection::default(), state, |ui, alone: &mut Alone<AddNodeSection>| {
            alone.page.ui(ui, &alone.state, &alone.outbox);
        })
    }

    fn local_hub() -> Reach {
        Reach {
            address: "127.0.0.1:7070".parse().unwrap(),
            url: "http://127.0.0.1:7070".to_owned(),
            pin: None,
        }
    }

    #[test]
    fn add_a_node_asks_the_service_then_shows_the_key_and_the_steps() {
        let mut state = testing::running();
        state.add_node.reach = Some(local_hub());
        let mut harness = section(state);
        assert!(shows(&harness, "for this machine only"));
        click(&mut harness, "Make a key for a new node");
        assert!(matches!(sent(&harness).as_slice(), [Request::AddNodeKey]), "the key wasn't asked for");
        // The window records it pending (app.rs) until the service's answer comes.
        harness.state_mut().state.add_node.asking = true;
        harness.step();
        assert!(shows(&harness, "Asking the hub for a key…"));

        let key = NodeKey {
            key: "gh1_made_up_key".to_owned(),
            gateway: "gw".to_owned(),
            hub_url: "https://192.0.2.7:7070".to_owned(),
            pin: Some(CertPin([0xcd; 32])),
            expires_ms: 0,
        };
        let state = &mut harness.state_mut().state;
        state.add_node.asking = false;
        state.add_node.answer = Some(Ok(AddNode::Key(key)));
        harness.run_steps(2);
        assert!(shows(&harness, "A one-time key for a new node of gateway 'gw'"));
        assert!(harness.query_by_label("New node's key").is_some(), "the key isn't in a field to copy");
        assert!(shows(&harness, "Copy new node's key"));
        assert!(shows(&harness, "GATEHOUSE_AUTH_KEY='gh1_made_up_key' gatehouse node register"));
        assert!(shows(&harness, "choose Manual setup and paste the key"));
        assert!(shows(&harness, &"cd".repeat(32)), "the steps don't name the pinned fingerprint");
        assert!(!shows(&harness, LOCAL_ONLY), "a key for a hub on the network is called local");
    }

    #[test]
    fn a_full_gateway_shows_the_limit_and_no_admin_token_shows_the_command() {
        let mut state = testing::running();
        let limit = "gateway 'gw' already has 4 nodes (at most 4); remove a node or raise max_nodes";
        state.add_node.answer = Some(Ok(AddNode::Full(limit.to_owned())));
        let mut harness = section(state);
        assert!(shows(&harness, limit));
        assert!(harness.query_by_label("New node's key").is_none(), "a full gateway shows a key");
        assert!(shows(&harness, "hub runs elsewhere"), "a node without an embedded hub offers to move it");

        let command = "gatehouse hub key create gw --once --expires 30m".to_owned();
        harness.state_mut().state.add_node.answer =
            Some(Ok(AddNode::AskTheAdmin { command: command.clone() }));
        harness.run_steps(2);
        assert!(shows(&harness, "doesn't hold its hub's admin token"));
        assert!(harness.query_by_label("Command for the hub's admin").is_some());
    }

    #[test]
    fn opening_the_hub_sends_the_typed_address_and_a_bad_one_is_flagged() {
        let mut state = testing::running();
        state.add_node.reach = Some(local_hub());
        let mut harness = section(state);
        type_into(&mut harness, "Network address", "not an address");
        assert!(shows(&harness, "is not an IP address"));
        click(&mut harness, "Open to other machines");
        assert!(sent(&harness).is_empty(), "a bad address was sent");
        harness.state_mut().page.address = "127.0.0.1:7443".to_owned();
        harness.run_steps(2);
        click(&mut harness, "Open to other machines");
        let asked = sent(&harness);
        assert!(
            matches!(asked.as_slice(), [Request::HubAccess(Access::Network(Some(a)))] if a.port() == 7443),
            "{} requests",
            asked.len()
        );

        // On the network: the fingerprint, and the way back.
        let pin = CertPin([0xef; 32]);
        harness.state_mut().state.add_node.reach = Some(Reach {
            address: "127.0.0.1:7443".parse().unwrap(),
            url: "https://127.0.0.1:7443".to_owned(),
            pin: Some(pin),
        });
        harness.run_steps(2);
        assert!(shows(&harness, "for other machines too") && shows(&harness, &pin.hex()));
        click(&mut harness, "Keep the hub to this machine");
        assert!(matches!(sent(&harness).as_slice(), [Request::HubAccess(Access::Local)]));
    }
}
