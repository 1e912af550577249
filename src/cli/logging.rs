//! Where log lines go: stderr always, and for `node run` also a daily-rolling file in the data
//! dir (`logs/gatehouse.log.YYYY-MM-DD`, the last 7 kept). The level can change while the
//! process runs. `GATEHOUSE_LOG` overrides everything (e.g. `debug`, `gatehouse=trace`).

use crate::node::logs::LogFeed;
use std::path::Path;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the level of the installed subscriber.
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogControl {
    /// Sets the level (`info`, `debug`, … or a filter directive); false if it doesn't parse.
    pub fn set_level(&self, level: &str) -> bool {
        match (&self.handle, filter(level)) {
            (Some(handle), Some(filter)) => handle.reload(filter).is_ok(),
            _ => false,
        }
    }
}

/// A filter for `level`, with the libraries' chatter kept down.
pub fn filter(level: &str) -> Option<EnvFilter> {
    if let Ok(from_env) = EnvFilter::try_from_env("GATEHOUSE_LOG") {
        return Some(from_env);
    }
    EnvFilter::try_new(format!("{level},sqlx=warn,hyper=warn,reqwest=warn")).ok()
}

/// Installs the process's logging: stderr, plus a rolling file in `file_dir` if given.
pub fn init(file_dir: Option<&Path>, level: &str) -> LogControl {
    init_with_feed(file_dir, level, None)
}

/// As [`init`], and also publishes every line that passes the level to `feed` (for watchers
/// of the node's control socket or the Configuration Manager).
pub fn init_with_feed(file_dir: Option<&Path>, level: &str, feed: Option<&LogFeed>) -> LogControl {
    let (filter_layer, handle) = reload::Layer::new(filter(level).unwrap_or_else(|| EnvFilter::new("info")));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let file = file_dir.and_then(|dir| {
        // The appender lists the folder to prune old files; a missing one is made here,
        // owner-only like its parent, the data dir (whose group may pass through to a shared
        // control socket, never into the logs).
        let _ = crate::machine::owner_only_dir(dir);
        let appender = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("gatehouse")
            .filename_suffix("log")
            .max_log_files(7)
            .build(dir);
        match appender {
            Ok(appender) => Some(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(appender)),
            Err(e) => {
                eprintln!("warning: logging to stderr only; can't write logs in {}: {e}", dir.display());
                None
            }
        }
    });
    let installed = tracing_subscriber::registry()
        .with(filter_layer)
        .with(stderr)
        .with(file)
        .with(feed.map(LogFeed::layer))
        .try_init()
        .is_ok();
    LogControl { handle: installed.then_some(handle) }
}
