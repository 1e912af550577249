//! The Diagnostics tab: the live log (level and text filters, newest at the bottom), the
//! verbose switch, connection tests to the hub and every peer, and the log export. It draws
//! from [`State`] and sends requests; like every tab it never reads a file itself.

use eframe::egui;

use super::ops::{Op, OpKind};
use super::outbox::{Answers, Outbox};
use super::service::Request;
use super::state::State;
use super::widgets::{self, Badge};
use super::worker::{Answer, Command, FilePurpose, Page, Worker};
use crate::node::logs::LogLine;
use crate::node::ops::LOG_LEVELS;
use std::collections::VecDeque;
use std::path::PathBuf;

/// The tab's own state.
pub struct DiagnosticsPage {
    /// Lines at this level and more severe are shown (an index into [`LOG_LEVELS`]).
    pub level: usize,
    /// Only lines containing this (any case) are shown.
    pub filter: String,
    /// What the switch shows until the settings say otherwise (`None`: follow the settings).
    pub verbose: Option<bool>,
    /// Where "Export logs" writes the zip.
    pub export_path: String,
    pub answers: Answers,
    /// The lines the filters let through, kept between frames.
    shown: Shown,
}

impl Default for DiagnosticsPage {
    fn default() -> Self {
        // A suggestion in the home folder; read from the environment once, not per frame.
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        DiagnosticsPage {
            level: 2,
            filter: String::new(),
            verbose: None,
            export_path: home.join("gatehouse-logs.zip").display().to_string(),
            answers: Answers::default(),
            shown: Shown::default(),
        }
    }
}

/// The lines that pass the filters, as indices into [`State::logs`], found again only when
/// the log, the level or the text changes: filtering 5,000 lines (lower-casing each) on every
/// frame would make scrolling and typing slow. New lines at the end are filtered alone.
#[derive(Default)]
struct Shown {
    /// What `rows` were found for.
    key: Option<ShownKey>,
    rows: Vec<usize>,
    /// How many lines were put through the filters so far (tests read it).
    examined: usize,
}

#[derive(PartialEq)]
struct ShownKey {
    level: usize,
    filter: String,
    len: usize,
    /// The first and last line: the log keeps its newest lines only, so when it is full a new
    /// line shows as a different first and last line, the length staying the same.
    front: Option<LogLine>,
    back: Option<LogLine>,
}

impl Shown {
    /// The indices of the lines of `logs` to show (`filter` already lower-case).
    fn rows(&mut self, logs: &VecDeque<LogLine>, level: usize, filter: &str) -> &[usize] {
        let unchanged = |key: &ShownKey| {
            key.level == level
                && key.filter == filter
                && key.len == logs.len()
                && key.front.as_ref() == logs.front()
                && key.back.as_ref() == logs.back()
        };
        if self.key.as_ref().is_some_and(unchanged) {
            return &self.rows;
        }
        // Lines only added at the end (the log isn't full yet): filter just those.
        let from = match &self.key {
            Some(key)
                if key.level == level
                    && key.filter == filter
                    && key.len < logs.len()
                    && key.front.as_ref() == logs.front()
                    && key.len.checked_sub(1).and_then(|last| logs.get(last)) == key.back.as_ref() =>
            {
                key.len
            }
            _ => {
                self.rows.clear();
                0
            }
        };
        self.rows.extend((from..logs.len()).filter(|&i| shown(&logs[i], level, filter)));
        self.examined += logs.len() - from;
        self.key = Some(ShownKey {
            level,
            filter: filter.to_owned(),
            len: logs.len(),
            front: logs.front().cloned(),
            back: logs.back().cloned(),
        });
        &self.rows
    }
}

impl DiagnosticsPage {
    /// Takes in the answer to an operation (answers for other tabs are ignored).
    pub fn done(&mut self, op: OpKind, result: &Result<String, String>) {
        match op {
            OpKind::LogLevel => {
                if result.is_err() {
                    // The switch goes back to what is stored.
                    self.verbose = None;
                }
            }
            OpKind::ExportLogs => {}
            _ => return,
        }
        self.answers.done(op, result);
    }

    /// Takes in a finished background answer (the save dialog).
    pub fn apply(&mut self, answer: Answer) {
        if let Answer::FilePicked(FilePurpose::LogExport, Some(path)) = answer {
            self.export_path = path.display().to_string();
        }
    }
}

/// The rank of a level name (`ERROR` 0 … `TRACE` 4); unknown levels count as `INFO`.
fn rank(level: &str) -> usize {
    LOG_LEVELS.iter().position(|l| l.eq_ignore_ascii_case(level)).unwrap_or(2)
}

/// Whether `line` passes the level and text filters (`filter` already lower-case).
pub fn shown(line: &LogLine, level: usize, filter: &str) -> bool {
    rank(&line.level) <= level
        && (filter.is_empty()
            || line.message.to_lowercase().contains(filter)
            || line.target.to_lowercase().contains(filter))
}

/// `12:04:05.123` (UTC) for a time in milliseconds since the Unix epoch.
fn clock(at_ms: i64) -> String {
    let ms = at_ms.rem_euclid(86_400_000);
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// Draws the Diagnostics tab.
pub fn diagnostics_ui(
    ui: &mut egui::Ui,
    page: &mut DiagnosticsPage,
    state: &State,
    service: &Outbox,
    worker: &Worker,
) {
    ui.heading("Diagnostics");
    ui.add_space(8.0);
    log_ui(ui, page, state, service);
    ui.add_space(12.0);
    ui.separator();
    tests_ui(ui, state, service);
    ui.add_space(12.0);
    ui.separator();
    export_ui(ui, page, service, worker);
}

fn log_ui(ui: &mut egui::Ui, page: &mut DiagnosticsPage, state: &State, service: &Outbox) {
    ui.heading("Log");
    ui.horizontal(|ui| {
        let label = ui.label("Level");
        egui::ComboBox::from_id_salt("log_level_filter")
            .selected_text(LOG_LEVELS[page.level].to_uppercase())
            .show_ui(ui, |ui| {
                for (i, level) in LOG_LEVELS.iter().enumerate() {
                    ui.selectable_value(&mut page.level, i, level.to_uppercase());
                }
            })
            .response
            .labelled_by(label.id);
        let filter = egui::TextEdit::singleline(&mut page.filter).hint_text("text in the message");
        widgets::field(ui, "Filter", filter, 220.0);
        let stored =
            state.settings.as_ref().is_some_and(|s| matches!(s.log_level.as_str(), "debug" | "trace"));
        let mut verbose = page.verbose.unwrap_or(stored);
        let busy = page.answers.waiting(OpKind::LogLevel);
        if ui.add_enabled(!busy, egui::Checkbox::new(&mut verbose, "Verbose logging")).changed() {
            page.verbose = Some(verbose);
            let level = if verbose { "debug" } else { "info" };
            page.answers.send(service, Op::SetLogLevel(level.to_owned()));
        }
    });
    widgets::reply(ui, page.answers.get(OpKind::LogLevel));
    let filter = page.filter.trim().to_lowercase();
    let rows = page.shown.rows(&state.logs, page.level, &filter);
    ui.label(format!("{} of {} lines (times in UTC)", rows.len(), state.logs.len()));
    let row_height = ui.text_style_height(&egui::TextStyle::Monospace);
    egui::Frame::group(ui.style()).show(ui, |ui| {
        egui::ScrollArea::both()
            .id_salt("log_lines")
            .max_height(320.0)
            .min_scrolled_height(320.0)
            .auto_shrink([false, false])
            .stick_to_bottom(true)
            .show_rows(ui, row_height, rows.len(), |ui, range| {
                for line in rows[range].iter().filter_map(|&i| state.logs.get(i)) {
                    let text =
                        format!("{} {:5} {} {}", clock(line.at_ms), line.level, line.target, line.message);
                    let color = match rank(&line.level) {
                        0 => Some(ui.visuals().error_fg_color),
                        1 => Some(ui.visuals().warn_fg_color),
                        _ => None,
                    };
                    let mut text = egui::RichText::new(text).monospace();
                    if let Some(color) = color {
                        text = text.color(color);
                    }
                    ui.add(egui::Label::new(text).extend());
                }
            });
    });
}

fn tests_ui(ui: &mut egui::Ui, state: &State, service: &Outbox) {
    ui.heading("Connections");
    ui.label("Times a request to the hub and a handshake with every other node of the gateway.");
    ui.horizontal(|ui| {
        let pending = state.testing.then_some("Testing…");
        if widgets::pending_button(ui, state.running(), "Test connection", pending) {
            service.send(Request::TestConnections);
        }
        if !state.testing && !state.running() {
            ui.label("The node service isn't running.");
        }
    });
    let Some(tests) = &state.tests else { return };
    if tests.is_empty() {
        ui.label("Nothing was tested: the node service isn't running here.");
        return;
    }
    egui::Grid::new("connection_tests").num_columns(5).striped(true).spacing([12.0, 4.0]).show(ui, |ui| {
        for header in ["Target", "Address", "", "Time", "Result"] {
            ui.strong(header);
        }
        ui.end_row();
        for test in tests {
            ui.label(&test.target);
            ui.monospace(&test.address);
            if test.ok {
                widgets::badge(ui, Badge::Ok, "ok");
            } else {
                widgets::badge(ui, Badge::Fail, "failed");
            }
            ui.label(format!("{} ms", test.millis));
            widgets::paragraph(ui, &test.message);
            ui.end_row();
        }
    });
}

fn export_ui(ui: &mut egui::Ui, page: &mut DiagnosticsPage, service: &Outbox, worker: &Worker) {
    ui.heading("Log export");
    ui.label("A zip of this node's log files and its current status (no secrets), to send to support.");
    egui::Grid::new("export_logs").num_columns(3).spacing([8.0, 6.0]).show(ui, |ui| {
        let (_, browse) = widgets::file_field(ui, "Export to", &mut page.export_path, "");
        if browse {
            worker.send(Page::Diagnostics, Command::PickFile(FilePurpose::LogExport));
        }
        ui.end_row();
    });
    let ready = !page.export_path.trim().is_empty() && !page.answers.waiting(OpKind::ExportLogs);
    if widgets::button(ui, ready, "Export logs") {
        let path = PathBuf::from(page.export_path.trim());
        page.answers.send(service, Op::ExportLogs(path));
    }
    widgets::reply(ui, page.answers.get(OpKind::ExportLogs));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: &str, message: &str) -> LogLine {
        LogLine { at_ms: 0, level: level.into(), target: "gatehouse::node".into(), message: message.into() }
    }

    #[test]
    fn the_level_filter_shows_that_level_and_more_severe() {
        let info = rank("info");
        assert!(shown(&line("ERROR", "x"), info, ""));
        assert!(shown(&line("WARN", "x"), info, ""));
        assert!(shown(&line("INFO", "x"), info, ""));
        assert!(!shown(&line("DEBUG", "x"), info, ""));
        assert!(shown(&line("TRACE", "x"), rank("trace"), ""));
        assert!(!shown(&line("WARN", "x"), rank("error"), ""));
    }

    #[test]
    fn the_text_filter_ignores_case_and_looks_at_the_module_too() {
        let all = rank("trace");
        assert!(shown(&line("INFO", "Heartbeat failed"), all, "heartbeat"));
        assert!(!shown(&line("INFO", "Heartbeat failed"), all, "peer"));
        assert!(shown(&line("INFO", "anything"), all, "node"));
    }

    fn brute_force(logs: &VecDeque<LogLine>, level: usize, filter: &str) -> Vec<usize> {
        (0..logs.len()).filter(|&i| shown(&logs[i], level, filter)).collect()
    }

    #[test]
    fn the_shown_lines_are_filtered_again_only_when_something_changed() {
        let mut logs: VecDeque<LogLine> =
            (0..100).map(|i| line(if i % 2 == 0 { "INFO" } else { "DEBUG" }, &format!("line {i}"))).collect();
        let mut view = Shown::default();
        let info = rank("info");
        assert_eq!(view.rows(&logs, info, ""), brute_force(&logs, info, ""));
        assert_eq!(view.examined, 100);
        // Frames with nothing new filter nothing.
        for _ in 0..10 {
            view.rows(&logs, info, "");
        }
        assert_eq!(view.examined, 100, "an unchanged log was filtered again");

        // A new line at the end: only it is filtered.
        logs.push_back(line("WARN", "late"));
        assert_eq!(view.rows(&logs, info, ""), brute_force(&logs, info, ""));
        assert_eq!(view.examined, 101);

        // Another level or text: everything again.
        assert_eq!(view.rows(&logs, info, "line 4"), brute_force(&logs, info, "line 4"));
        assert_eq!(view.examined, 202);

        // A full log drops its oldest line for each new one: the length stays, the rows move.
        logs.pop_front();
        logs.push_back(line("INFO", "line 4 again"));
        assert_eq!(view.rows(&logs, info, "line 4"), brute_force(&logs, info, "line 4"));
        assert_eq!(view.examined, 303);
        logs.clear();
        assert!(view.rows(&logs, info, "line 4").is_empty());
    }

    #[test]
    fn clock_times_are_utc_with_milliseconds() {
        assert_eq!(clock(0), "00:00:00.000");
        assert_eq!(clock(1_700_000_000_123), "22:13:20.123");
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::service::ServiceState;
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable as _;

    /// The tab alone, on a hand-made state: no service thread; requests stay in the outbox.
    struct Alone {
        page: DiagnosticsPage,
        state: State,
        outbox: Outbox,
        worker: Worker,
    }

    fn tab(state: State) -> Harness<'static, Alone> {
        let alone = Alone {
            page: DiagnosticsPage::default(),
            state,
            outbox: Outbox::default(),
            worker: Worker::default(),
        };
        Harness::builder().with_size(egui::vec2(1000.0, 1400.0)).build_ui_state(
            |ui, alone: &mut Alone| {
                diagnostics_ui(ui, &mut alone.page, &alone.state, &alone.outbox, &alone.worker);
            },
            alone,
        )
    }

    #[test]
    fn test_connection_is_asked_through_the_outbox_and_testing_shows_while_pending() {
        let mut harness = tab(State { loaded: true, service: ServiceState::Running, ..State::default() });
        assert!(harness.query_by_label_contains("Testing").is_none());
        harness.get_by_label("Test connection").click();
        harness.step();
        let asked = harness.state().outbox.drain();
        assert!(matches!(asked.as_slice(), [Request::TestConnections]), "{} requests", asked.len());

        // What `logic()` records for that request.
        harness.state_mut().state.testing = true;
        harness.step();
        assert!(harness.query_by_label_contains("Testing…").is_some(), "no \"Testing…\" while a test runs");
    }

    #[test]
    fn a_stopped_service_offers_no_test() {
        let mut harness =
            tab(State { loaded: true, service: ServiceState::Stopped { reason: None }, ..State::default() });
        harness.step();
        assert!(harness.query_by_label_contains("isn't running").is_some());
        harness.get_by_label("Test connection").click();
        harness.step();
        assert!(harness.state().outbox.is_empty(), "a disabled button asked for a test");
    }

    #[test]
    fn verbose_logging_and_the_export_are_asked_through_the_outbox() {
        let mut harness = tab(State { settings: Some(crate::gui::testing::settings()), ..State::default() });
        harness.get_by_label("Verbose logging").click();
        harness.step();
        let asked = harness.state().outbox.drain();
        assert!(
            matches!(asked.as_slice(), [Request::Op(Op::SetLogLevel(level))] if level == "debug"),
            "{} requests",
            asked.len()
        );
        // A refusal puts the switch back to what is stored.
        harness.state_mut().page.done(OpKind::LogLevel, &Err("The log level can't be stored.".to_owned()));
        harness.step();
        assert_eq!(harness.state().page.verbose, None);
        assert!(harness.query_by_label_contains("can't be stored").is_some(), "the refusal isn't shown");

        harness.state_mut().page.export_path = "/tmp/logs.zip".to_owned();
        harness.step();
        harness.get_by_label("Export logs").click();
        harness.step();
        let asked = harness.state().outbox.drain();
        assert!(
            matches!(asked.as_slice(), [Request::Op(Op::ExportLogs(path))] if path == &PathBuf::from("/tmp/logs.zip")),
            "{} requests",
            asked.len()
        );
        harness.get_by_label("Export logs").click();
        harness.step();
        assert!(harness.state().outbox.is_empty(), "exported twice at once");
    }
}
