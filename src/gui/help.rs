//! The Help tab: what this is, which version runs, where to read more.

use eframe::egui;

/// Draws the Help tab.
pub fn help_ui(ui: &mut egui::Ui) {
    ui.heading("Gatehouse");
    ui.label("A self-hosted data gateway: nodes in your network move data to storage for the hub.");
    ui.add_space(8.0);
    egui::Grid::new("help_grid").num_columns(2).spacing([24.0, 6.0]).show(ui, |ui| {
        ui.label("This node's version");
        ui.label(format!("Version {}", crate::VERSION));
        ui.end_row();
        ui.label("Command line");
        ui.monospace("gatehouse --help");
        ui.end_row();
        ui.label("Check a certificate");
        ui.monospace("gatehouse cert check FILE");
        ui.end_row();
    });
}
