//! The read-only status page at `/`: gateways, their nodes with every metric and status
//! reason, and recent jobs with how much their copies moved and the node of each run. Plain
//! HTML, no scripts; it refreshes itself every few seconds.

use super::access::Viewer;
use super::gateways::all_gateway_views;
use super::jobs::recent_jobs;
use crate::encoding::binary_size;
use crate::hub::error::ApiError;
use crate::hub::{HubState, progress};
use crate::protocol::{GatewayView, JobView, NodeView, RunState, RunView};
use axum::extract::State;
use axum::response::Html;
use std::fmt::Write as _;

/// Jobs shown per gateway.
const RECENT_JOBS: u32 = 10;
/// Runs listed per job.
const RUNS_SHOWN: usize = 20;

pub async fn index(State(state): State<HubState>, _: Viewer) -> Result<Html<String>, ApiError> {
    let gateways = all_gateway_views(&state).await?;
    let mut jobs = Vec::new();
    for gateway in &gateways {
        jobs.push(recent_jobs(&state, &gateway.id, RECENT_JOBS).await?);
    }
    Ok(Html(render(&gateways, &jobs)))
}

fn render(gateways: &[GatewayView], jobs: &[Vec<JobView>]) -> String {
    let mut out = String::from(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"5\"><title>Gatehouse hub</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}",
        "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;font-size:.9em}th{background:#f3f3f3}",
        ".Online{color:#1a7f37}.Offline{color:#b42318}.Limited,.Inactive,.Upgrading,.NeedsRegistration{color:#9a6700}",
        "</style></head><body><h1>Gatehouse hub</h1>"
    ));
    if gateways.is_empty() {
        out.push_str(
            "<p>No gateways yet. Create one with <code>gatehouse hub gateway create NAME</code>.</p>",
        );
    }
    for (gateway, jobs) in gateways.iter().zip(jobs) {
        let _ = write!(
            out,
            "<h2>Gateway {} <span class=\"{:?}\">{:?}</span></h2><p>{}Version {} · {} · policy {:?} · max {} nodes</p>",
            escape(&gateway.name),
            gateway.status,
            gateway.status,
            gateway.reason.as_deref().map(|r| format!("{} · ", escape(r))).unwrap_or_default(),
            escape(gateway.version.as_deref().unwrap_or("—")),
            if gateway.encryption { "encrypted" } else { "not encrypted" },
            gateway.settings.policy,
            gateway.settings.max_nodes,
        );
        nodes_table(&mut out, &gateway.nodes);
        jobs_table(&mut out, jobs);
    }
    out.push_str("</body></html>");
    out
}

fn nodes_table(out: &mut String, nodes: &[NodeView]) {
    if nodes.is_empty() {
        out.push_str("<p>No nodes registered.</p>");
        return;
    }
    out.push_str(
        "<table><tr><th>Node</th><th>Status</th><th>Role</th><th>Version</th><th>Available memory</th><th>CPU</th>\
         <th>Network in/out</th><th>Runs</th><th>Credentials</th><th>Certificate</th></tr>",
    );
    for n in nodes {
        let m = &n.metrics;
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{:?}\">{:?}{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{:.0} %</td>\
             <td>{} / {}</td><td>{} / {}</td><td>v{}</td><td>{}</td></tr>",
            escape(&n.name),
            n.status,
            n.status,
            n.reason.as_deref().map(|r| format!(": {}", escape(r))).unwrap_or_default(),
            n.role,
            escape(&n.version),
            bytes(m.available_memory_bytes),
            m.cpu_percent,
            rate(m.network_in_bytes_per_second),
            rate(m.network_out_bytes_per_second),
            m.runs_running,
            m.runs_limit,
            m.credential_version,
            escape(m.encryption_thumbprint.as_deref().map_or("none", |t| t.get(..16).unwrap_or(t))),
        );
    }
    out.push_str("</table>");
}

fn jobs_table(out: &mut String, jobs: &[JobView]) {
    if jobs.is_empty() {
        out.push_str("<p>No jobs yet.</p>");
        return;
    }
    out.push_str(
        "<table><tr><th>Job</th><th>State</th><th>Copied</th><th>Runs (node, state, attempt)</th></tr>",
    );
    for job in jobs {
        let copied = job.progress.map_or_else(
            || "—".to_owned(),
            |p| {
                format!(
                    "{} of {}<br>{} of {} files",
                    binary_size(p.bytes_done),
                    binary_size(p.bytes_total),
                    p.files_done,
                    p.files_total
                )
            },
        );
        // A copy may have thousands of runs: the page shows the first few and counts the rest.
        let mut runs: Vec<String> = job.runs.iter().take(RUNS_SHOWN).map(run_line).collect();
        if job.runs.len() > RUNS_SHOWN {
            runs.push(format!("… {} runs in all: {}", job.runs.len(), state_counts(&job.runs)));
        }
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:?}</td><td>{copied}</td><td>{}</td></tr>",
            escape(&job.name),
            job.state,
            runs.join("<br>")
        );
    }
    out.push_str("</table>");
}

fn run_line(r: &RunView) -> String {
    let moved = progress::of_run(r)
        .map(|p| format!(" · {} of {}", binary_size(p.bytes_done), binary_size(p.bytes_total)))
        .unwrap_or_default();
    // Earlier attempts, each with its node and why the run was tried again.
    let earlier = r.attempts.iter().filter(|a| a.attempt < r.attempt).fold(String::new(), |mut out, a| {
        let why = a.reason.as_deref().map(|why| format!(" — {}", escape(why))).unwrap_or_default();
        let node = escape(a.node_name.as_deref().unwrap_or("—"));
        let _ = write!(out, "<br>&nbsp;&nbsp;attempt {} on {node}: {}{why}", a.attempt, a.outcome.as_str());
        out
    });
    format!(
        "#{}.{} {} {:?} (attempt {}){moved}{earlier}",
        r.activity_index,
        r.partition,
        escape(r.node_name.as_deref().unwrap_or("—")),
        r.state,
        r.attempt
    )
}

/// "3 Running, 40 Queued": the states still at work first, then the ended ones.
fn state_counts(runs: &[RunView]) -> String {
    let states = [
        RunState::Running,
        RunState::Dispatched,
        RunState::Queued,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];
    states
        .iter()
        .filter_map(|&state| {
            let n = runs.iter().filter(|r| r.state == state).count();
            (n > 0).then(|| format!("{n} {state:?}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let gib = n as f64 / f64::from(1u32 << 30);
    format!("{gib:.1} GiB")
}

fn rate(n: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let kib = n as f64 / 1024.0;
    format!("{kib:.0} KiB/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape("<b>&\"x\""), "&lt;b&gt;&amp;&quot;x&quot;");
    }

    #[test]
    fn a_copy_job_shows_what_it_moved_and_each_run_its_node_and_bytes() {
        use crate::hub::progress::fixtures::{copy_run, job_of};
        let mut listing = copy_run(0, RunState::Succeeded, None);
        listing.result = Some(serde_json::json!({"files": 3, "bytes": 3 << 20}));
        let mut running = copy_run(
            1,
            RunState::Running,
            Some(
                serde_json::json!({"bytes_done": 1 << 20, "bytes_total": 2 << 20, "files_done": 1, "files_total": 2}),
            ),
        );
        running.node_name = Some("<n1>".into());
        let queued = copy_run(
            2,
            RunState::Queued,
            Some(serde_json::json!({"bytes_total": 1 << 20, "files_total": 1})),
        );
        let mut out = String::new();
        jobs_table(&mut out, &[job_of(vec![listing, running, queued])]);
        assert!(out.contains("1.0 MiB of 3.0 MiB<br>1 of 3 files"), "{out}");
        assert!(out.contains("#0.1 &lt;n1&gt; Running (attempt 1) · 1.0 MiB of 2.0 MiB"), "{out}");
        assert!(out.contains("#0.2 — Queued (attempt 1) · 0 B of 1.0 MiB"), "{out}");
    }

    #[test]
    fn a_retried_run_shows_each_earlier_attempt_with_its_node_and_reason() {
        use crate::hub::progress::fixtures::copy_run;
        use crate::protocol::{AttemptOutcome, AttemptView};
        let mut run = copy_run(1, RunState::Running, None);
        run.attempt = 2;
        run.node_name = Some("n3".into());
        let lost = AttemptView {
            attempt: 1,
            node_id: None,
            node_name: Some("n2".into()),
            started_ms: Some(1),
            ended_ms: Some(2),
            outcome: AttemptOutcome::Lost,
            reason: Some("node n2 stopped sending heartbeats".into()),
        };
        let current = AttemptView {
            attempt: 2,
            node_name: Some("n3".into()),
            outcome: AttemptOutcome::Running,
            reason: None,
            ..lost.clone()
        };
        run.attempts = vec![lost, current];
        let line = run_line(&run);
        assert!(line.starts_with("#0.1 n3 Running (attempt 2)"), "{line}");
        assert!(
            line.ends_with("<br>&nbsp;&nbsp;attempt 1 on n2: lost — node n2 stopped sending heartbeats"),
            "{line}"
        );
    }

    #[test]
    fn a_job_with_many_runs_lists_a_few_and_counts_them_all() {
        use crate::hub::progress::fixtures::{copy_run, job_of};
        let runs = (0..50)
            .map(|p| copy_run(p, if p < 3 { RunState::Running } else { RunState::Queued }, None))
            .collect();
        let mut out = String::new();
        jobs_table(&mut out, &[job_of(runs)]);
        assert_eq!(out.matches("(attempt 1)").count(), RUNS_SHOWN, "{out}");
        assert!(out.contains("… 50 runs in all: 3 Running, 47 Queued"), "{out}");
    }
}
