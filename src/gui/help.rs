//! The Help tab: this node's version, the gateway's and the hub's, whether a newer version
//! runs somewhere in the gateway (an update is available), where the data lives, links.

use eframe::egui;

use super::state::State;
use super::widgets;
use crate::protocol::compare_versions;
use std::cmp::Ordering;

/// What to tell about updates: the hub's offer of a release ("update available: V (you run
/// U) …", or which release a node older than its gateway should take), else the newest
/// version seen on the hub or any node of the gateway, if newer than this node's.
pub fn update_available(state: &State) -> Option<String> {
    let status = state.status.as_ref()?;
    if let Some(phase) = &status.update_phase {
        return Some(format!("{}.", capitalised(phase)));
    }
    if let Some(offer) = &status.update {
        return Some(format!("{}.", capitalised(&offer.advice)));
    }
    let newest = newest_seen(status)?;
    Some(format!("Version {newest} runs in this gateway; update this node to it."))
}

fn capitalised(sentence: &str) -> String {
    let mut chars = sentence.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The newest version seen on the hub or any node of the gateway, if newer than this node's.
fn newest_seen(status: &crate::node::NodeStatus) -> Option<String> {
    let seen = status
        .peers
        .iter()
        .map(|p| p.version.as_str())
        .chain(status.hub_version.as_deref())
        .chain(status.gateway_version.as_deref());
    seen.filter(|v| !v.is_empty())
        .max_by(|a, b| compare_versions(a, b))
        .filter(|newest| compare_versions(newest, crate::version()) == Ordering::Greater)
        .map(str::to_owned)
}

/// Draws the Help tab.
pub fn help_ui(ui: &mut egui::Ui, state: &State) {
    ui.heading("Gatehouse");
    ui.label("A self-hosted data gateway: nodes in your network move data to storage for the hub.");
    ui.add_space(8.0);
    let status = state.status.as_ref();
    egui::Grid::new("help_grid").num_columns(2).spacing([24.0, 6.0]).show(ui, |ui| {
        let known = |version: Option<&String>| version.cloned().unwrap_or_else(|| "not known yet".to_owned());
        widgets::row(ui, "This node's version", format!("Version {}", crate::version()));
        widgets::row(ui, "The gateway's version", known(status.and_then(|s| s.gateway_version.as_ref())));
        widgets::row(ui, "The hub's version", known(status.and_then(|s| s.hub_version.as_ref())));
        ui.label("Updates");
        match update_available(state) {
            Some(sentence) => ui.colored_label(ui.visuals().warn_fg_color, sentence),
            None if status.is_some() => ui.label("This node runs the newest version in its gateway."),
            None => ui.label("Known once the node reaches the hub."),
        };
        ui.end_row();
        ui.label("Data directory");
        ui.monospace(state.data_dir.as_ref().map_or_else(String::new, |d| d.display().to_string()));
        ui.end_row();
        if let Some(settings) = &state.settings {
            ui.label("Hub status page");
            ui.hyperlink(&settings.hub_url);
            ui.end_row();
        }
        if let Some(dir) = &state.data_dir {
            ui.label("Log files");
            let logs = dir.join("logs");
            ui.hyperlink_to(logs.display().to_string(), format!("file://{}", logs.display()));
            ui.end_row();
        }
        ui.label("Command line");
        ui.monospace("gatehouse --help");
        ui.end_row();
    });
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::testing::{self, Alone, shows};

    fn tab(state: State) -> testing::Page<()> {
        testing::page((), state, |ui, alone: &mut Alone<()>| help_ui(ui, &alone.state))
    }

    #[test]
    fn a_newer_version_in_the_gateway_asks_for_an_update() {
        let mut state = testing::running();
        state.status.as_mut().unwrap().hub_version = Some("999.0.0".to_owned());
        let harness = tab(state);
        assert!(shows(&harness, "Version 999.0.0 runs in this gateway; update this node to it."));
        assert!(shows(&harness, "not known yet"), "an unknown gateway version isn't said to be unknown");

        let mut state = testing::running();
        state.status.as_mut().unwrap().hub_version = Some(crate::VERSION.to_owned());
        let harness = tab(state);
        assert!(shows(&harness, "This node runs the newest version in its gateway."));
        let harness = tab(State { status: None, ..testing::running() });
        assert!(shows(&harness, "Known once the node reaches the hub."));
    }

    #[test]
    fn a_release_the_hub_offers_is_named_with_the_version_this_node_runs() {
        use crate::protocol::{ReleaseView, UpdateOffer};
        let advice = format!(
            "update available: 0.2.0 (you run {}); install it with `gatehouse node update`",
            crate::version()
        );
        let offered = |phase: Option<&str>| {
            let mut state = testing::running();
            let release = ReleaseView {
                id: "r".into(),
                version: "0.2.0".into(),
                platform: crate::release::platform(),
                size_bytes: 1,
                sha256: String::new(),
                signature: String::new(),
                key_id: String::new(),
                published: true,
                created_ms: 0,
            };
            let status = state.status.as_mut().unwrap();
            status.update = Some(UpdateOffer {
                release,
                keys: Vec::new(),
                advice: advice.clone(),
                granted: false,
                waiting_for: None,
            });
            status.update_phase = phase.map(str::to_owned);
            tab(state)
        };
        assert!(shows(&offered(None), &format!("U{}.", &advice[1..])));
        let harness = offered(Some("update to 0.2.0: letting the running runs finish"));
        assert!(shows(&harness, "Update to 0.2.0: letting the running runs finish."));
    }
}
