//! The Home tab: is the service running (with Start/Stop), can it reach the hub, how is the
//! gateway, every node's load and version, small live plots, and the runs executing here.

use eframe::egui;
use egui_plot::{Line, Plot, PlotPoints};

use super::outbox::Outbox;
use super::service::{Request, ServiceState};
use super::state::{Sample, State};
use super::widgets;
use crate::credential_sync::{self, NodeCredentials};
use crate::encoding::binary_size;
use crate::node::NodeStatus;
use crate::protocol::{NodeMetrics, NodeState, Role};

/// Draws the Home tab.
pub fn home_ui(ui: &mut egui::Ui, state: &State, service: &Outbox) {
    service_ui(ui, state, service);
    ui.separator();
    let Some(status) = &state.status else {
        if let Some(settings) = &state.settings {
            ui.label(format!(
                "Node '{}' of gateway '{}' (hub {}).",
                settings.node_name, settings.gateway_name, settings.hub_url
            ));
        }
        return;
    };
    summary_ui(ui, status);
    ui.add_space(8.0);
    ui.heading("Nodes");
    nodes_ui(ui, status);
    ui.add_space(8.0);
    plots_ui(ui, state);
    ui.add_space(8.0);
    runs_ui(ui, status);
}

fn service_ui(ui: &mut egui::Ui, state: &State, service: &Outbox) {
    ui.horizontal(|ui| {
        let (text, running) = match &state.service {
            ServiceState::Unregistered => ("Service: not set up".to_owned(), false),
            ServiceState::Starting => ("Service: starting…".to_owned(), false),
            ServiceState::Running => ("Service: running in this window".to_owned(), true),
            ServiceState::Attached { pid, data_dir, system: true } => (
                format!(
                    "Service: attached to the system service gatehouse-node (pid {pid}, {})",
                    data_dir.display()
                ),
                true,
            ),
            ServiceState::Attached { pid, .. } => {
                (format!("Service: attached to gatehouse node run (pid {pid})"), true)
            }
            ServiceState::Stopping => ("Service: stopping…".to_owned(), true),
            ServiceState::Stopped { .. } => ("Service: stopped".to_owned(), false),
        };
        ui.label(egui::RichText::new(text).strong());
        let busy = matches!(state.service, ServiceState::Starting | ServiceState::Stopping);
        if running {
            if ui.add_enabled(!busy, egui::Button::new("Stop")).clicked() {
                service.send(Request::Stop);
            }
        } else if ui.add_enabled(!busy, egui::Button::new("Start")).clicked() {
            service.send(Request::Start);
        }
        if busy {
            ui.spinner();
        }
    });
    if let ServiceState::Stopped { reason: Some(reason) } = &state.service {
        widgets::problem(ui, reason);
    }
}

fn summary_ui(ui: &mut egui::Ui, status: &NodeStatus) {
    egui::Grid::new("home_summary").num_columns(2).spacing([24.0, 4.0]).show(ui, |ui| {
        ui.label("Hub");
        if status.hub_connected {
            ui.label(format!("✔ connected to {}", status.hub_url));
        } else {
            let why = status.hub_error.as_deref().unwrap_or("waiting for the first heartbeat");
            ui.colored_label(ui.visuals().error_fg_color, format!("✖ not connected: {why}"));
        }
        ui.end_row();
        ui.label("Gateway");
        let gateway_state = status.gateway_state.map_or_else(|| "unknown".to_owned(), |s| format!("{s:?}"));
        ui.label(with_reason(
            format!("{}: {gateway_state}", status.gateway_name),
            status.gateway_reason.as_deref(),
        ));
        ui.end_row();
        ui.label("This node");
        ui.label(with_reason(
            format!("{}: {}", status.node_name, state_text(status.state)),
            status.reason.as_deref(),
        ));
        ui.end_row();
        ui.label("Role");
        ui.label(role_text(status.role));
        ui.end_row();
    });
}

/// One row of the nodes table.
struct Row<'a> {
    name: &'a str,
    state: Option<NodeState>,
    reason: Option<&'a str>,
    version: &'a str,
    role: Role,
    metrics: &'a NodeMetrics,
}

fn nodes_ui(ui: &mut egui::Ui, status: &NodeStatus) {
    let mut rows = vec![Row {
        name: &status.node_name,
        state: status.state,
        reason: status.reason.as_deref(),
        version: crate::version(),
        role: status.role,
        metrics: &status.metrics,
    }];
    let mut peers: Vec<_> = status.peers.iter().collect();
    peers.sort_by_key(|p| p.registered_order);
    rows.extend(peers.into_iter().map(|p| Row {
        name: &p.name,
        state: Some(p.status),
        reason: p.reason.as_deref(),
        version: &p.version,
        role: p.role,
        metrics: &p.metrics,
    }));
    let holders: Vec<NodeCredentials<'_>> = rows
        .iter()
        .map(|r| NodeCredentials {
            name: r.name,
            online: r.state.is_some_and(|s| s != NodeState::Offline),
            metrics: r.metrics,
        })
        .collect();
    let credentials = credential_sync::gateway_credentials(&holders, crate::node::unix_millis());
    let in_sync = credential_sync::in_sync(&holders, &credentials);
    let headers = [
        "Name",
        "Status",
        "Version",
        "Available memory",
        "CPU",
        "Network in / out",
        "Concurrent jobs",
        "Role",
        "Credentials",
    ];
    egui::Grid::new("home_nodes").num_columns(headers.len()).striped(true).spacing([14.0, 4.0]).show(
        ui,
        |ui| {
            for header in headers {
                ui.label(egui::RichText::new(header).strong());
            }
            ui.end_row();
            for row in &rows {
                let m = row.metrics;
                ui.label(row.name);
                let state = ui.label(state_text(row.state));
                if let Some(reason) = row.reason {
                    state.on_hover_text(reason);
                }
                ui.label(row.version);
                ui.label(binary_size(m.available_memory_bytes));
                ui.label(format!("{:.0} %", m.cpu_percent));
                ui.label(format!(
                    "{}/s / {}/s",
                    binary_size(m.network_in_bytes_per_second),
                    binary_size(m.network_out_bytes_per_second)
                ));
                ui.label(format!("{} / {}", m.runs_running, m.runs_limit));
                ui.label(role_text(row.role));
                let online = row.state.is_some_and(|s| s != NodeState::Offline);
                ui.label(credential_text(&credentials, in_sync, row.name, online));
                ui.end_row();
            }
        },
    );
}

/// A node's credential state: in sync (every online node holds the same), or which
/// credentials it is behind on or holds with a version ahead of the clock.
fn credential_text(
    credentials: &[crate::protocol::GatewayCredential],
    in_sync: bool,
    node: &str,
    online: bool,
) -> String {
    let (behind, ahead) = credential_sync::standing(credentials, node);
    let mut parts = Vec::new();
    if !behind.is_empty() {
        parts.push(format!("Behind on {}", behind.join(", ")));
    }
    if !ahead.is_empty() {
        parts.push(format!("Ahead of the clock: {}", ahead.join(", ")));
    }
    match (parts.is_empty(), online, in_sync) {
        (false, _, _) => parts.join("; "),
        (true, false, _) => "Unknown (offline)".to_owned(),
        (true, true, true) => "In sync".to_owned(),
        (true, true, false) => "Up to date; others are behind".to_owned(),
    }
}

fn plots_ui(ui: &mut egui::Ui, state: &State) {
    let series = |f: fn(&Sample) -> f64| -> PlotPoints<'static> {
        state.history.iter().map(|s| [s.at, f(s)]).collect::<Vec<_>>().into()
    };
    ui.columns(3, |columns| {
        small_plot(
            &mut columns[0],
            "CPU %",
            vec![Line::new("CPU %", series(|s| s.cpu_percent))],
            Some(100.0),
        );
        small_plot(
            &mut columns[1],
            "Memory used %",
            vec![Line::new("Memory %", series(|s| s.memory_percent))],
            Some(100.0),
        );
        small_plot(
            &mut columns[2],
            "Network bytes/s",
            vec![Line::new("In", series(|s| s.network_in)), Line::new("Out", series(|s| s.network_out))],
            None,
        );
    });
}

fn small_plot(ui: &mut egui::Ui, title: &str, lines: Vec<Line<'static>>, max: Option<f64>) {
    ui.label(title);
    let mut plot = Plot::new(title)
        .height(110.0)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .show_x(false)
        .x_axis_formatter(|_, _| String::new())
        .include_y(0.0);
    if let Some(max) = max {
        plot = plot.include_y(max);
    }
    plot.show(ui, |plot_ui| {
        for line in lines {
            plot_ui.line(line);
        }
    });
}

fn runs_ui(ui: &mut egui::Ui, status: &NodeStatus) {
    ui.heading("Runs on this node");
    if status.runs.is_empty() {
        ui.label("No run is executing here right now.");
        return;
    }
    let now = crate::node::unix_millis();
    for run in &status.runs {
        ui.horizontal(|ui| {
            ui.label(format!("{} ({}, attempt {})", run.run_id, run.kind, run.attempt));
            if let Some(copy) = &run.transfer {
                ui.label(copy_text(copy));
            }
            let bar = match run.progress(now) {
                Some(progress) => egui::ProgressBar::new(progress).show_percentage(),
                None => egui::ProgressBar::new(0.0).animate(true),
            };
            ui.add_sized([240.0, 18.0], bar);
        });
    }
}

/// "12.0 MiB of 40.0 MiB, 3 of 9 files, 25.1 MiB/s".
pub fn copy_text(copy: &crate::protocol::TransferProgress) -> String {
    use crate::encoding::binary_size;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a rate to show")]
    let rate = copy.bytes_per_second.max(0.0) as u64;
    format!(
        "{} of {}, {} of {} files, {}/s",
        binary_size(copy.bytes_done),
        binary_size(copy.bytes_total),
        copy.files_done,
        copy.files_total,
        binary_size(rate)
    )
}

fn with_reason(text: String, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("{text} ({reason})"),
        None => text,
    }
}

fn state_text(state: Option<NodeState>) -> String {
    state.map_or_else(|| "Unknown".to_owned(), |s| format!("{s:?}"))
}

fn role_text(role: Role) -> &'static str {
    match role {
        Role::Dispatcher => "Dispatcher",
        Role::Worker => "Worker",
    }
}

#[cfg(test)]
#[path = "home_tests.rs"]
mod page_tests;
