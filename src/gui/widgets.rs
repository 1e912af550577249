//! The pieces every page draws the same way: status badges, labelled fields and rows,
//! sentences for a problem or a refusal, the answer under a section, and buttons that show
//! while their request is under way. Drawing only: a widget reads what it is handed and
//! returns what was clicked or typed; the page decides what to ask for.

use eframe::egui;

use super::outbox::Reply;

/// The width of a field for a path, a URL or a secret.
pub const WIDE: f32 = 420.0;
/// The width of a field for a number.
pub const NARROW: f32 = 120.0;
const FIELD_HEIGHT: f32 = 22.0;
/// The colour of a passed check or a working connection.
const GREEN: egui::Color32 = egui::Color32::from_rgb(0x2e, 0x9d, 0x4a);

/// What a badge says of a check, a connection or a rule: each has its mark and colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Badge {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// `✔ text` in green, `⚠` in the warning colour, `✖` in the error colour, `–` dimmed.
pub fn badge(ui: &mut egui::Ui, badge: Badge, text: &str) -> egui::Response {
    let visuals = ui.visuals();
    let (mark, color) = match badge {
        Badge::Ok => ("✔", GREEN),
        Badge::Warn => ("⚠", visuals.warn_fg_color),
        Badge::Fail => ("✖", visuals.error_fg_color),
        Badge::Skip => ("–", visuals.weak_text_color()),
    };
    ui.colored_label(color, format!("{mark} {text}"))
}

/// A section of a page: a rule, its title, then `body`.
pub fn section(ui: &mut egui::Ui, title: &str, body: impl FnOnce(&mut egui::Ui)) {
    ui.add_space(12.0);
    ui.separator();
    ui.heading(title);
    ui.add_space(4.0);
    body(ui);
}

/// A sentence that wraps at the page's width.
pub fn paragraph(ui: &mut egui::Ui, text: &str) {
    ui.add(egui::Label::new(text).wrap());
}

/// What is wrong (with what was typed, or why something was refused), in the error colour.
pub fn problem(ui: &mut egui::Ui, text: &str) {
    ui.add(egui::Label::new(egui::RichText::new(text).color(ui.visuals().error_fg_color)).wrap());
}

/// What is still missing before a step can go on, in the warning colour.
pub fn warning(ui: &mut egui::Ui, text: &str) {
    ui.add(egui::Label::new(egui::RichText::new(text).color(ui.visuals().warn_fg_color)).wrap());
}

/// A spinner and what is under way, in the current layout.
pub fn working(ui: &mut egui::Ui, text: &str) {
    ui.spinner();
    ui.label(text);
}

/// A spinner and what is under way, on a line of its own.
pub fn waiting(ui: &mut egui::Ui, text: &str) {
    ui.horizontal(|ui| working(ui, text));
}

/// The answer to a section's last request: a spinner while it runs, then its sentence (a
/// refusal in the error colour).
pub fn reply(ui: &mut egui::Ui, reply: Option<&Reply>) {
    match reply {
        None => {}
        Some(Reply::Waiting) => waiting(ui, "Working…"),
        Some(Reply::Done(Ok(sentence))) => paragraph(ui, sentence),
        Some(Reply::Done(Err(sentence))) => problem(ui, sentence),
    }
}

/// A button that can be greyed out; true when it was clicked while enabled.
pub fn button(ui: &mut egui::Ui, enabled: bool, text: &str) -> bool {
    ui.add_enabled(enabled, egui::Button::new(text)).clicked()
}

/// A button for a request that takes a while: greyed out while `pending` (then followed by a
/// spinner and that sentence, e.g. "Testing…"), so it can't be asked for twice.
pub fn pending_button(ui: &mut egui::Ui, enabled: bool, text: &str, pending: Option<&str>) -> bool {
    let clicked = button(ui, enabled && pending.is_none(), text);
    if let Some(pending) = pending {
        working(ui, pending);
    }
    clicked
}

/// A label and the field it names, tied together for screen readers (and tests).
pub fn field(ui: &mut egui::Ui, label: &str, edit: egui::TextEdit<'_>, width: f32) -> egui::Response {
    let label = ui.label(label);
    ui.add_sized([width, FIELD_HEIGHT], edit).labelled_by(label.id)
}

/// A wide labelled text field, its text hidden when `password`.
pub fn text_field(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut String,
    hint: &str,
    password: bool,
) -> egui::Response {
    field(ui, label, egui::TextEdit::singleline(value).password(password).hint_text(hint), WIDE)
}

/// A narrow labelled field for a number.
pub fn number_field(ui: &mut egui::Ui, label: &str, value: &mut String, hint: &str) -> egui::Response {
    field(ui, label, egui::TextEdit::singleline(value).hint_text(hint), NARROW)
}

/// A labelled path field and its "Browse…" button (in a three-column grid): the field's
/// response, and whether the button was clicked (for the page to ask the worker for a dialog).
pub fn file_field(ui: &mut egui::Ui, label: &str, value: &mut String, hint: &str) -> (egui::Response, bool) {
    let field = text_field(ui, label, value, hint, false);
    let browse = ui.button("Browse…").clicked();
    (field, browse)
}

/// One row of a two-column grid: a name and its value.
pub fn row(ui: &mut egui::Ui, name: &str, value: impl Into<egui::WidgetText>) {
    ui.label(name);
    ui.label(value);
    ui.end_row();
}
