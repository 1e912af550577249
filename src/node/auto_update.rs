//! The opt-in automatic update window (`auto_update` in node.toml, `gatehouse node
//! auto-update`, the window's Settings): the days and the hours, in the machine's local time,
//! in which the running node service takes a newer release the hub offers by itself, exactly
//! as `node update` would (same slot, drain, Upgrading, checks, swap, watchdog: [`super::update`]).
//!
//! Local time is what `chrono::Local` says: the `TZ` variable of the node service if set (a zone
//! name such as `Europe/Paris`, or a POSIX rule such as `CET-1CEST,M3.5.0,M10.5.0/3`), else
//! `/etc/localtime`, else UTC. A window may run past midnight (`23:00-01:00`): it then belongs
//! to the day it opens on.
//!
//! This module parses, shows and evaluates windows (pure, no clock) and, for the service,
//! decides each heartbeat whether to start or withdraw an automatic update
//! ([`AutoUpdater::consider`]). It never installs anything itself.

use super::Shared;
use super::update::{self, Outcome};
use crate::protocol::UpdateOffer;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Minutes in a day; `24:00` may end a window.
const DAY_MINUTES: u16 = 24 * 60;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Why a window as typed can't be used. Each says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("{0:?} is not an update window; write it as FROM-TO in 24-hour local time, e.g. 02:00-04:00")]
    NotAWindow(String),
    #[error("{0:?} is not a time of day; write HH:MM from 00:00 to 23:59 (24:00 may end a window)")]
    NotATime(String),
    #[error("the window {from}-{to} starts and ends at the same time; give it a length, e.g. 02:00-04:00")]
    Empty { from: String, to: String },
    #[error(
        "{0:?} is not a day; name days as mon, tue, wed, thu, fri, sat, sun (comma-separated), or say weekdays, weekend or all"
    )]
    NotADay(String),
    #[error("no day is chosen; choose at least one day, or turn automatic updates off")]
    NoDays,
}

/// A time of day, in minutes after midnight (0–1440).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    /// Reads `HH:MM` (or `H:MM`); `24:00` is allowed (the end of a day).
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let text = text.trim();
        let wrong = || WindowError::NotATime(text.to_owned());
        let (hours, minutes) = text.split_once(':').ok_or_else(wrong)?;
        let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
            len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(hours, 1..=2) || !digits(minutes, 2..=2) {
            return Err(wrong());
        }
        let (hours, minutes): (u16, u16) =
            (hours.parse().map_err(|_| wrong())?, minutes.parse().map_err(|_| wrong())?);
        if minutes > 59 || hours > 24 || (hours == 24 && minutes > 0) {
            return Err(wrong());
        }
        Ok(TimeOfDay(hours * 60 + minutes))
    }

    /// Minutes after midnight.
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = WindowError;
    fn try_from(text: String) -> Result<Self, WindowError> {
        TimeOfDay::parse(&text)
    }
}

impl From<TimeOfDay> for String {
    fn from(time: TimeOfDay) -> String {
        time.to_string()
    }
}

/// The days a window opens on: bit 0 Monday … bit 6 Sunday. In node.toml `"all"` or a list
/// such as `["sat", "sun"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DaysFile", into = "DaysFile")]
pub struct Days(u8);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum DaysFile {
    Word(String),
    List(Vec<String>),
}

impl Days {
    pub const ALL: Days = Days(0x7f);

    /// Reads `all`, `weekdays`, `weekend`, or day names separated by commas (`mon,tue`).
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        Days::from_names(text.split(',').map(str::trim).filter(|d| !d.is_empty()))
    }

    fn from_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<Self, WindowError> {
        let mut bits = 0u8;
        for name in names {
            let lower = name.to_ascii_lowercase();
            bits |= match lower.as_str() {
                "all" | "daily" | "every day" => 0x7f,
                "weekdays" => 0x1f,
                "weekend" | "weekends" => 0x60,
                day => {
                    // mon, monday, Mon…
                    let index = DAY_NAMES
                        .iter()
                        .position(|d| day.len() >= 3 && full_name(d).starts_with(day))
                        .ok_or_else(|| WindowError::NotADay(name.to_owned()))?;
                    1 << index
                }
            };
        }
        if bits == 0 { Err(WindowError::NoDays) } else { Ok(Days(bits)) }
    }

    /// The days from flags, Monday first.
    pub fn from_flags(flags: [bool; 7]) -> Result<Self, WindowError> {
        let bits = flags.iter().enumerate().filter(|(_, on)| **on).fold(0u8, |bits, (i, _)| bits | 1 << i);
        if bits == 0 { Err(WindowError::NoDays) } else { Ok(Days(bits)) }
    }

    /// Monday first.
    pub fn flags(self) -> [bool; 7] {
        std::array::from_fn(|i| self.0 & (1 << i) != 0)
    }

    /// Whether day `weekday` (0 Monday … 6 Sunday) is one of them.
    pub fn has(self, weekday: u8) -> bool {
        weekday < 7 && self.0 & (1 << weekday) != 0
    }

    /// `all`, or the names joined by commas: what `--days` takes.
    pub fn arg(self) -> String {
        if self == Days::ALL {
            return "all".to_owned();
        }
        self.names().join(",")
    }

    fn names(self) -> Vec<&'static str> {
        DAY_NAMES.iter().enumerate().filter(|(i, _)| self.0 & (1 << i) != 0).map(|(_, d)| *d).collect()
    }
}

fn full_name(day: &str) -> &'static str {
    match day {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

impl TryFrom<DaysFile> for Days {
    type Error = WindowError;
    fn try_from(file: DaysFile) -> Result<Self, WindowError> {
        match file {
            DaysFile::Word(word) => Days::parse(&word),
            DaysFile::List(list) => Days::from_names(list.iter().map(String::as_str)),
        }
    }
}

impl From<Days> for DaysFile {
    fn from(days: Days) -> DaysFile {
        if days == Days::ALL {
            DaysFile::Word("all".to_owned())
        } else {
            DaysFile::List(days.names().into_iter().map(str::to_owned).collect())
        }
    }
}

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Days::ALL {
            return f.write_str("every day");
        }
        let names: Vec<String> = self
            .names()
            .iter()
            .map(|d| {
                let mut name = d.to_string();
                name[..1].make_ascii_uppercase();
                name
            })
            .collect();
        match names.as_slice() {
            [one] => write!(f, "on {one}"),
            [rest @ .., last] => write!(f, "on {} and {last}", rest.join(", ")),
            [] => f.write_str("on no day"),
        }
    }
}

/// When the node may update itself: `auto_update = { days = ["sat", "sun"], from = "02:00",
/// to = "04:00" }` in node.toml, local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateWindow {
    #[serde(default = "all_days")]
    pub days: Days,
    pub from: TimeOfDay,
    pub to: TimeOfDay,
}

fn all_days() -> Days {
    Days::ALL
}

impl UpdateWindow {
    /// A window from its parts; an empty one (from = to) is refused.
    pub fn new(days: Days, from: TimeOfDay, to: TimeOfDay) -> Result<Self, WindowError> {
        if from.0 == DAY_MINUTES {
            return Err(WindowError::NotATime(format!("{from} (as a start)")));
        }
        if from == to {
            return Err(WindowError::Empty { from: from.to_string(), to: to.to_string() });
        }
        Ok(UpdateWindow { days, from, to })
    }

    /// `--window FROM-TO [--days D]` as typed; days default to every day.
    pub fn parse(window: &str, days: Option<&str>) -> Result<Self, WindowError> {
        let window = window.trim();
        let (from, to) = window
            .split_once('-')
            .or_else(|| window.split_once('–'))
            .ok_or_else(|| WindowError::NotAWindow(window.to_owned()))?;
        let days = days.map_or(Ok(Days::ALL), Days::parse)?;
        UpdateWindow::new(days, TimeOfDay::parse(from)?, TimeOfDay::parse(to)?)
    }

    /// Whether the window is open at `minute` (after midnight) of day `weekday` (0 Monday):
    /// a window past midnight belongs to the day it opens on.
    pub fn contains(&self, weekday: u8, minute: u16) -> bool {
        let (from, to) = (self.from.0, self.to.0);
        if from < to {
            self.days.has(weekday) && (from..to).contains(&minute)
        } else {
            let yesterday = (weekday + 6) % 7;
            (self.days.has(weekday) && minute >= from) || (self.days.has(yesterday) && minute < to)
        }
    }

    /// The same window as `gatehouse node auto-update` arguments.
    pub fn args(&self) -> String {
        format!("--window {}-{} --days {}", self.from, self.to, self.days.arg())
    }
}

impl fmt::Display for UpdateWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let next = if self.from > self.to { " the next day" } else { "" };
        write!(f, "{} from {} to {}{next}", self.days, self.from, self.to)
    }
}

/// The machine's local time now, as a window reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNow {
    /// 0 Monday … 6 Sunday.
    pub weekday: u8,
    /// Minutes after midnight.
    pub minute: u16,
    /// The zone's offset from UTC now, e.g. `UTC+01:00`.
    pub offset: String,
}

/// Local time now (`TZ`, else /etc/localtime, else UTC). Reads the zone file: not for a UI
/// thread.
pub fn local_now() -> LocalNow {
    use chrono::{Datelike as _, Timelike as _};
    let now = chrono::Local::now();
    let seconds = now.offset().local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    let seconds = seconds.unsigned_abs();
    LocalNow {
        weekday: u8::try_from(now.weekday().num_days_from_monday()).unwrap_or(0),
        minute: u16::try_from(now.hour() * 60 + now.minute()).unwrap_or(0),
        offset: format!("UTC{sign}{:02}:{:02}", seconds / 3600, seconds % 3600 / 60),
    }
}

/// The service's side of the window, kept by its heartbeat loop: what it said last, so a
/// reason not to update is logged once, not every second.
#[derive(Default)]
pub(crate) struct AutoUpdater {
    said: Option<String>,
}

impl AutoUpdater {
    /// After a heartbeat answer: starts the update the hub offers when the window (read from
    /// node.toml now, so a change applies without a restart) is open, and withdraws an
    /// automatic one still waiting for the gateway's turn once it has closed. A release that
    /// was rolled back or failed here is not tried again automatically (`node update` may).
    pub fn consider(&mut self, shared: &Shared, offer: Option<&UpdateOffer>) {
        let updater = &shared.updater;
        let Some(offer) = offer.filter(|_| updater.is_idle() || updater.is_automatic()) else { return };
        let window = shared.store.settings().ok().and_then(|s| s.auto_update);
        let Some(window) = window else {
            if updater.withdraw_automatic() {
                self.say(|| {
                    "automatic updates were turned off; the update waiting for its turn is off".to_owned()
                });
            }
            return;
        };
        let now = local_now();
        if !window.contains(now.weekday, now.minute) {
            if updater.withdraw_automatic() {
                self.say(|| format!("the automatic update window ({window}, local time {}) closed before this node's turn; it waits for the next one", now.offset));
            }
            return;
        }
        if !updater.is_idle() {
            return;
        }
        let to = &offer.release.version;
        if let Some(refusal) = updater.refusal() {
            self.say(|| format!("release {to} is offered inside the automatic update window, but {refusal}"));
            return;
        }
        let tried = update::last_record(&shared.store).filter(|r| &r.to == to && r.from == crate::version());
        if let Some(record) =
            tried.filter(|r| matches!(r.outcome, Outcome::RolledBack { .. } | Outcome::Failed { .. }))
        {
            self.say(|| format!("release {to} is not tried again automatically ({record}); update by hand with `gatehouse node update`"));
            return;
        }
        match updater.request_automatic(offer) {
            Ok((from, to)) => {
                self.said = None;
                tracing::info!(%from, %to, "inside the automatic update window ({window}, local time {}); updating", now.offset);
            }
            Err(e) => self.say(|| format!("the automatic update to {to} can't start: {e}")),
        }
    }

    fn say(&mut self, sentence: impl FnOnce() -> String) {
        let sentence = sentence();
        if self.said.as_deref() != Some(sentence.as_str()) {
            tracing::info!("{sentence}");
            self.said = Some(sentence);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(text: &str, days: Option<&str>) -> UpdateWindow {
        UpdateWindow::parse(text, days).unwrap()
    }

    #[test]
    fn a_window_is_open_from_its_start_to_just_before_its_end_on_its_days() {
        let w = window("02:00-04:00", Some("sat,sun"));
        assert_eq!(w.to_string(), "on Sat and Sun from 02:00 to 04:00");
        assert!(!w.contains(5, 119));
        assert!(w.contains(5, 120) && w.contains(6, 239));
        assert!(!w.contains(6, 240));
        assert!(!w.contains(4, 180), "open on a Friday");
        let all = window("0:00-24:00", None);
        assert!(all.contains(2, 0) && all.contains(2, 1439));
        assert_eq!(all.to_string(), "every day from 00:00 to 24:00");
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_opens_on() {
        let w = window("23:00-01:00", Some("fri"));
        assert_eq!(w.to_string(), "on Fri from 23:00 to 01:00 the next day");
        assert!(w.contains(4, 23 * 60) && w.contains(5, 59));
        assert!(!w.contains(5, 60) && !w.contains(5, 23 * 60), "open on Saturday night");
        assert!(!w.contains(3, 30), "open after Wednesday");
        let sunday = window("22:00-02:00", Some("sun"));
        assert!(sunday.contains(0, 90), "Sunday's window doesn't reach into Monday");
    }

    #[test]
    fn malformed_windows_and_days_are_refused_with_a_sentence() {
        let refused = |w: &str, d: Option<&str>| UpdateWindow::parse(w, d).unwrap_err().to_string();
        assert!(refused("2am-4am", None).contains("not a time of day"));
        assert!(refused("02:00", None).contains("write it as FROM-TO"));
        assert!(refused("25:00-04:00", None).contains("\"25:00\" is not a time of day"));
        assert!(refused("02:60-04:00", None).contains("not a time of day"));
        assert!(refused("04:00-04:00", None).contains("starts and ends at the same time"));
        assert!(refused("24:00-02:00", None).contains("not a time of day"));
        assert!(refused("00:00-24:00", Some("mon,funday")).contains("\"funday\" is not a day"));
        assert!(refused("00:00-01:00", Some(",")).contains("no day is chosen"));
        assert_eq!(window("1:30-2:00", Some("Weekend")).days, Days::parse("sat,sunday").unwrap());
        assert_eq!(window("01:00-02:00", Some("weekdays")).days.arg(), "mon,tue,wed,thu,fri");
    }

    #[test]
    fn a_window_reads_back_from_node_toml_as_written() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct File {
            auto_update: UpdateWindow,
        }
        let file = File { auto_update: window("02:00-04:00", Some("sat,sun")) };
        let text = toml::to_string(&file).unwrap();
        assert!(text.contains(r#"days = ["sat", "sun"]"#) && text.contains(r#"from = "02:00""#), "{text}");
        assert_eq!(toml::from_str::<File>(&text).unwrap(), file);
        let all: File =
            toml::from_str("auto_update = { days = \"all\", from = \"02:00\", to = \"04:00\" }").unwrap();
        assert_eq!(all.auto_update.days, Days::ALL);
        assert!(toml::from_str::<File>("auto_update = { from = \"2\", to = \"04:00\" }").is_err());
        assert_eq!(all.auto_update.args(), "--window 02:00-04:00 --days all");
    }

    #[test]
    fn local_time_is_a_day_a_minute_and_an_offset() {
        // Whatever zone this machine has (TZ can't be set here: unsafe code is forbidden);
        // tests/node_update.rs starts a node under a POSIX TZ rule.
        let now = local_now();
        assert!(now.weekday < 7 && now.minute < DAY_MINUTES);
        assert!(now.offset.starts_with("UTC+") || now.offset.starts_with("UTC-"), "{}", now.offset);
    }
}
