//! The node service's log lines for whoever watches live (the Configuration Manager's
//! Diagnostics tab): a tracing layer that copies each event into a broadcast channel. Slow or
//! absent watchers lose old lines; the service never waits for them.

use std::fmt::Write as _;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The module that logged it, e.g. `gatehouse::node::dispatch`.
    pub target: String,
    /// The message, then `key=value` fields.
    pub message: String,
}

/// Where log lines are published; subscribe to read them.
#[derive(Clone)]
pub struct LogFeed {
    tx: broadcast::Sender<LogLine>,
}

impl LogFeed {
    /// Keeps the last `capacity` lines for each subscriber that falls behind.
    pub fn new(capacity: usize) -> Self {
        LogFeed { tx: broadcast::channel(capacity.max(1)).0 }
    }

    /// The layer to add to the process's tracing subscriber.
    pub fn layer(&self) -> LogLayer {
        LogLayer { tx: self.tx.clone() }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.tx.subscribe()
    }
}

/// A `tracing_subscriber` layer that publishes every event to a [`LogFeed`].
pub struct LogLayer {
    tx: broadcast::Sender<LogLine>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let line = LogLine {
            at_ms,
            level: event.metadata().level().to_string(),
            target: event.metadata().target().to_owned(),
            message: text.finish(),
        };
        // No watcher, or one that fell behind: the line is simply not kept for it.
        let _ = self.tx.send(line);
    }
}

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        if self.fields.is_empty() { self.message } else { format!("{}{}", self.message, self.fields) }
    }
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

/// Applies the data dir's `log_level` setting (changed by `gatehouse node log-level` or the
/// window) to the running process: re-read every two seconds, handed to `set_level`.
pub async fn follow_level(
    store: super::store::Store,
    mut level: String,
    set_level: impl Fn(&str) -> bool,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        if let Ok(settings) = store.settings()
            && settings.log_level != level
        {
            level = settings.log_level;
            if set_level(&level) {
                tracing::info!(%level, "log level changed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn events_reach_subscribers_with_their_fields() {
        let feed = LogFeed::new(16);
        let mut lines = feed.subscribe();
        let subscriber = tracing_subscriber::registry().with(feed.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(peer = "n2", "can't reach a peer");
        });
        let line = lines.try_recv().unwrap();
        assert_eq!(line.level, "WARN");
        assert_eq!(line.message, "can't reach a peer peer=n2");
        assert!(line.target.ends_with("logs::tests"));
    }
}
