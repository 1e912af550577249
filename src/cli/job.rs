//! `gatehouse job …`: submit jobs to a gateway through the hub and follow their activity runs.
//! Uses the admin client and conventions of `admin` (token, `--hub`, `--json`, exit codes).

use super::admin::{
    Connection, EXIT_CODES, Table, emit, execute, execute_with_code, indent, timestamp, timestamp_with_age,
};
use crate::encoding::binary_size;
use crate::hub::progress;
use crate::protocol::{Activity, JobSpec, JobView, JobsQuery, RunState, RunView};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How much of a run's result or error the table shows.
const DETAIL_CHARS: usize = 60;
/// How often `job show --follow` asks the hub.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Failed runs `--follow` names when the job failed; `--json` has them all.
const FAILURES_SHOWN: usize = 20;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job to a gateway from a JSON job spec.
    ///
    /// The spec: {"name": "copy-1", "activities": [{"kind": "echo", "message": "hi",
    /// "partitions": 2}, {"kind": "sleep", "millis": 500}]}.
    #[command(after_help = EXIT_CODES)]
    Submit(SubmitArgs),
    /// Show a job and each of its activity runs: state, attempt and node; for copies also files
    /// and bytes done of total, rates and errors, with the job's totals on top.
    ///
    /// With --follow, shows its progress live until it ends, then the table; the exit code
    /// is then 0 if the job succeeded and 1 if it failed or was cancelled.
    #[command(after_help = EXIT_CODES)]
    Show(ShowArgs),
    /// List a gateway's recent jobs, newest first.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Cancel a job: its runs that haven't ended are cancelled, and the nodes running them stop
    /// and remove what they started. A job that has ended can't be cancelled (exit 1).
    #[command(after_help = EXIT_CODES)]
    Cancel(CancelArgs),
    /// Start a job that failed or was cancelled again, as a new job of only its runs that
    /// didn't succeed (a copy's committed partitions are not copied again). A job that
    /// succeeded or still runs can't be re-run (exit 1).
    #[command(after_help = EXIT_CODES)]
    Rerun(CancelArgs),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The gateway's name or id.
    pub gateway: String,
    /// The JSON job spec; `-` reads it from standard input.
    pub file: PathBuf,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The job's id (as `job submit` and `job list` print it).
    pub job: String,
    /// Follow the job until it ends: a progress bar of bytes (or runs) done, with the rate
    /// and files, redrawn every half second (a line per change when not on a terminal);
    /// then the table. Exits 0 if it succeeded, 1 if it failed or was cancelled; Ctrl-C
    /// stops following, not the job.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job's id (as `job submit` and `job list` print it).
    pub job: String,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The gateway's name or id.
    pub gateway: String,
    /// Show at most N jobs (the hub allows up to 500; default 50).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Only jobs created since this time: RFC 3339 (2026-12-01T08:00:00Z) or an age (30m, 2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only jobs created before this time: RFC 3339 or an age, like --since.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<i64>,
    #[command(flatten)]
    pub connection: Connection,
}

/// A job's state, for `job list --state`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StateArg {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<StateArg> for RunState {
    fn from(state: StateArg) -> RunState {
        match state {
            StateArg::Queued => RunState::Queued,
            StateArg::Running => RunState::Running,
            StateArg::Succeeded => RunState::Succeeded,
            StateArg::Failed => RunState::Failed,
            StateArg::Cancelled => RunState::Cancelled,
        }
    }
}

/// A point in time as ms since the Unix epoch: RFC 3339, or an age before now (`90s`, `30m`,
/// `2h`, `7d`, `1h 30m`).
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(at) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|e| e.to_string());
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        format!("{text:?} is not a time: use RFC 3339 (2026-12-01T08:00:00Z) or an age such as 30m, 2h or 7d")
    })?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let at = now.saturating_sub(age);
    i64::try_from(at.as_millis()).map_err(|e| e.to_string())
}

pub fn run(command: JobCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobCommand::Submit(args) => {
            // A spec that can't be read is a usage problem: settle it before the network.
            let spec = read_spec(&args.file)?;
            execute(submit(args, spec))
        }
        JobCommand::Show(args) if args.follow => execute_with_code(follow(args)),
        JobCommand::Show(args) => execute(show(args)),
        JobCommand::List(args) => execute(list(args)),
        JobCommand::Cancel(args) => execute(cancel(args)),
        JobCommand::Rerun(args) => execute(rerun(args)),
    }
}

fn read_spec(file: &std::path::Path) -> anyhow::Result<JobSpec> {
    let (text, source) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the job spec from standard input")?;
        (text, "standard input".to_owned())
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the job spec {}", file.display()))?;
        (text, file.display().to_string())
    };
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{source} is not a job spec: {e} (expected {{\"name\": …, \"activities\": [{{\"kind\": \"echo\", \"message\": …}}]}}; see `gatehouse job submit --help`)"
        )
    })
}

async fn submit(args: SubmitArgs, spec: JobSpec) -> anyhow::Result<()> {
    let job = args.connection.client()?.submit_job(&args.gateway, &spec).await?;
    args.connection.answer(&job, || {
        format!(
            "Submitted job '{}' (id {}) to gateway '{}': {} run(s) queued.\nFollow it with: gatehouse job show {}\n",
            job.name,
            job.id,
            args.gateway,
            job.runs.len(),
            job.id
        )
    })
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let job = args.connection.client()?.job(&args.job).await?;
    args.connection.answer(&job, || job_text(&job))
}

/// `job show --follow`: polls the job until it ends, showing its progress live, then prints
/// the table; exit 0 if it succeeded, else 1 with the failed runs and their errors.
async fn follow(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let mut job = client.job(&args.job).await?;
    let mut live = if args.connection.json {
        Live::Quiet
    } else if std::io::stdout().is_terminal() {
        Live::bar()
    } else {
        Live::Lines { last: String::new() }
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while !job.state.is_final() {
        live.show(&job);
        tokio::select! {
            _ = &mut interrupted => {
                live.end();
                let _ = writeln!(
                    std::io::stderr(),
                    "Stopped following; job {} goes on. See it with: gatehouse job show {}",
                    job.id,
                    job.id
                );
                return Ok(ExitCode::from(130));
            }
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        match client.job(&args.job).await {
            Ok(next) => job = next,
            // A hub restarting or a network hiccup: keep asking (a refusal ends it).
            Err(e) if !e.is_refusal() => {
                live.note(&format!("can't ask the hub right now, still trying: {e}"));
            }
            Err(e) => {
                live.end();
                return Err(e.into());
            }
        }
    }
    live.end();
    args.connection.answer(&job, || job_text(&job))?;
    Ok(match ending(&job) {
        None => ExitCode::SUCCESS,
        Some(sentence) => {
            let _ = std::io::stderr().write_all(sentence.as_bytes());
            ExitCode::from(1)
        }
    })
}

/// How `--follow` shows a job while it runs.
enum Live {
    /// On a terminal: one bar, redrawn in place.
    Bar(indicatif::ProgressBar),
    /// Not on a terminal (a pipe, a log, a test): a line whenever what it would say changes.
    Lines { last: String },
    /// `--json`: only the final answer.
    Quiet,
}

impl Live {
    fn bar() -> Live {
        let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stdout());
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Live::Bar(bar)
    }

    fn show(&mut self, job: &JobView) {
        match self {
            Live::Bar(bar) => {
                // Bytes once a copy knows how many; runs before that, and for other activities.
                let (done, total) = match job.progress.filter(|p| p.bytes_total > 0) {
                    Some(p) => (p.bytes_done, p.bytes_total),
                    None => runs_done(job),
                };
                bar.set_length(total.max(1));
                bar.set_position(done.min(total));
                bar.set_message(live_line(job));
            }
            Live::Lines { last } => {
                let line = live_line(job);
                if line != *last {
                    let _ = emit(&format!("{line}\n"));
                    *last = line;
                }
            }
            Live::Quiet => {}
        }
    }

    fn note(&mut self, text: &str) {
        match self {
            Live::Bar(bar) => bar.println(text),
            Live::Lines { last } => {
                let _ = emit(&format!("{text}\n"));
                last.clear();
            }
            Live::Quiet => {}
        }
    }

    fn end(&mut self) {
        if let Live::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// (runs ended, runs in all).
fn runs_done(job: &JobView) -> (u64, u64) {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    (count(job.runs.iter().filter(|r| r.state.is_final()).count()), count(job.runs.len()))
}

/// What `--follow` says about a job that runs: "running: 1.0 MiB of 3.0 MiB, 1 of 3 files,
/// 512.0 KiB/s; 2/5 runs ended".
fn live_line(job: &JobView) -> String {
    let (done, total) = runs_done(job);
    let copied = job.progress.map_or_else(String::new, |p| {
        format!(
            "{} of {}, {} of {} files, {}; ",
            binary_size(p.bytes_done),
            binary_size(p.bytes_total),
            p.files_done,
            p.files_total,
            per_second(p.bytes_per_second)
        )
    });
    format!("{}: {copied}{done}/{total} runs ended", job.state.as_str())
}

/// Why a job that ended didn't succeed, with its failed runs and their errors; `None` when it
/// succeeded.
fn ending(job: &JobView) -> Option<String> {
    let how = match job.state {
        RunState::Cancelled => "was cancelled",
        RunState::Failed => "failed",
        _ => return None,
    };
    let failed: Vec<&RunView> = job.runs.iter().filter(|r| r.state == RunState::Failed).collect();
    let mut out = format!("error: job '{}' (id {}) {how}", job.name, job.id);
    if failed.is_empty() {
        out.push_str(".\n");
        return Some(out);
    }
    let _ = writeln!(out, "; {} of its {} runs failed:", failed.len(), job.runs.len());
    for run in failed.iter().take(FAILURES_SHOWN) {
        let _ = writeln!(
            out,
            "  activity {}, partition {}, attempt {} on {}: {}",
            run.activity_index,
            run.partition,
            run.attempt,
            node(run),
            run.error.as_deref().unwrap_or("(no error given)")
        );
    }
    if failed.len() > FAILURES_SHOWN {
        let _ = writeln!(
            out,
            "  … and {} more: gatehouse job show {} --json has them all",
            failed.len() - FAILURES_SHOWN,
            job.id
        );
    }
    Some(out)
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let query = JobsQuery {
        limit: args.limit,
        state: args.state.map(RunState::from),
        since_ms: args.since,
        until_ms: args.until,
    };
    let jobs = args.connection.client()?.find_jobs(&args.gateway, &query).await?;
    args.connection.answer(&jobs, || {
        if jobs.is_empty() {
            let filtered = args.state.is_some() || args.since.is_some() || args.until.is_some();
            return if filtered {
                format!(
                    "No jobs on gateway '{}' match; try without --state, --since or --until\n",
                    args.gateway
                )
            } else {
                format!(
                    "No jobs on gateway '{}' yet; submit one with: gatehouse job submit {} FILE\n",
                    args.gateway, args.gateway
                )
            };
        }
        let mut table = Table::new(&["ID", "NAME", "STATE", "RUNS DONE", "CREATED"]);
        for job in &jobs {
            let done = job.runs.iter().filter(|r| r.state.is_final()).count();
            table.row(vec![
                job.id.clone(),
                job.name.clone(),
                job.state.as_str().to_owned(),
                format!("{done}/{}", job.runs.len()),
                timestamp_with_age(job.created_ms),
            ]);
        }
        table.render()
    })
}

async fn rerun(args: CancelArgs) -> anyhow::Result<()> {
    let job = args.connection.client()?.rerun_job(&args.job).await?;
    args.connection.answer(&job, || {
        format!(
            "Re-running job '{}' as job {}: {} run(s) that didn't succeed are queued again.\nFollow it with: gatehouse job show {}\n",
            job.name,
            job.id,
            job.runs.len(),
            job.id
        )
    })
}

async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    let job = args.connection.client()?.cancel_job(&args.job).await?;
    args.connection.answer(&job, || cancelled_text(&job))
}

/// What a cancel stopped: the runs still waiting, and those nodes held (listed, since nodes
/// hold only a few at a time; a copy may have thousands waiting).
fn cancelled_text(job: &JobView) -> String {
    let cancelled: Vec<&RunView> = job.runs.iter().filter(|r| r.state == RunState::Cancelled).collect();
    let (held, waiting): (Vec<&RunView>, Vec<&RunView>) =
        cancelled.iter().partition(|r| r.node_name.is_some());
    let mut out = format!(
        "Cancelled job '{}' (id {}): {} run(s) cancelled, {} of them waiting in the queue and {} on nodes.\n",
        job.name,
        job.id,
        cancelled.len(),
        waiting.len(),
        held.len()
    );
    if !held.is_empty() {
        out.push_str("The nodes stop these runs at their next report and remove what they started:\n");
        let mut table = Table::new(&["ACTIVITY", "PARTITION", "KIND", "ATTEMPT", "NODE"]);
        for run in held {
            table.row(vec![
                run.activity_index.to_string(),
                run.partition.to_string(),
                kind(&run.activity).to_owned(),
                run.attempt.to_string(),
                node(run),
            ]);
        }
        out.push_str(&indent(&table.render(), "  "));
    }
    out
}

fn job_text(job: &JobView) -> String {
    let mut out = format!(
        "Job '{}' (id {})\n  gateway: {}\n  state:   {}\n  created: {}\n",
        job.name,
        job.id,
        job.gateway_id,
        job.state.as_str(),
        timestamp_with_age(job.created_ms)
    );
    // A hub older than this CLI sends no totals; they are the same sum of its runs.
    if let Some(total) = job.progress.or_else(|| progress::of_job(job)) {
        let _ = writeln!(
            out,
            "  copied:  {} of {}, {} of {} files, {}",
            binary_size(total.bytes_done),
            binary_size(total.bytes_total),
            total.files_done,
            total.files_total,
            per_second(total.bytes_per_second)
        );
    }
    let (copies, others): (Vec<&RunView>, Vec<&RunView>) =
        job.runs.iter().partition(|r| progress::is_copy(r));
    if !others.is_empty() {
        out.push_str("\nRuns:\n");
        out.push_str(&indent(&runs_table(&others).render(), "  "));
    }
    if !copies.is_empty() {
        out.push_str("\nCopy runs:\n");
        out.push_str(&indent(&copy_table(&copies).render(), "  "));
    }
    let retried: Vec<&RunView> = job.runs.iter().filter(|r| r.attempts.len() > 1).collect();
    if !retried.is_empty() {
        out.push_str("\nRuns tried more than once, every attempt (the others had one, shown above):\n");
        out.push_str(&indent(&attempts_table(&retried).render(), "  "));
    }
    out
}

/// Every attempt of `runs`: the node, when it started and ended, and how it went and why.
fn attempts_table(runs: &[&RunView]) -> Table {
    let mut table =
        Table::new(&["ACTIVITY", "PARTITION", "ATTEMPT", "NODE", "STARTED", "ENDED", "OUTCOME", "REASON"]);
    for run in runs {
        for attempt in &run.attempts {
            table.row(vec![
                run.activity_index.to_string(),
                run.partition.to_string(),
                attempt.attempt.to_string(),
                attempt.node_name.clone().unwrap_or_else(|| "-".to_owned()),
                attempt.started_ms.map_or_else(|| "-".to_owned(), timestamp),
                attempt.ended_ms.map_or_else(|| "-".to_owned(), timestamp),
                attempt.outcome.as_str().to_owned(),
                attempt.reason.as_deref().map_or_else(|| "-".to_owned(), shorten),
            ]);
        }
    }
    table
}

/// Runs of the test kinds (sleep, echo): what they reported, in one column.
fn runs_table(runs: &[&RunView]) -> Table {
    let mut table = Table::new(&["ACTIVITY", "PARTITION", "KIND", "STATE", "ATTEMPT", "NODE", "DETAIL"]);
    for run in runs {
        let detail = match (&run.error, &run.result, &run.progress) {
            (Some(error), _, _) => error.clone(),
            (None, Some(result), _) => format!("result {result}"),
            (None, None, Some(progress)) => format!("progress {progress}"),
            _ => String::new(),
        };
        table.row(vec![
            run.activity_index.to_string(),
            run.partition.to_string(),
            kind(&run.activity).to_owned(),
            run.state.as_str().to_owned(),
            run.attempt.to_string(),
            node(run),
            shorten(&detail),
        ]);
    }
    table
}

/// Copy runs: the listing run (partition 0) says what it found, the others how far they are.
fn copy_table(runs: &[&RunView]) -> Table {
    let mut table =
        Table::new(&["ACTIVITY", "PARTITION", "STATE", "ATTEMPT", "NODE", "FILES", "BYTES", "RATE", "ERROR"]);
    for run in runs {
        let (partition, files, bytes, rate) = if progress::is_listing(run) {
            let (files, bytes) = progress::listed(run)
                .map_or(("-".to_owned(), "-".to_owned()), |(f, b)| (format!("{f} listed"), binary_size(b)));
            ("0 (listing)".to_owned(), files, bytes, "-".to_owned())
        } else {
            let (files, bytes, rate) = progress::of_run(run).map_or_else(
                || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
                |p| {
                    (
                        format!("{}/{}", p.files_done, p.files_total),
                        format!("{}/{}", binary_size(p.bytes_done), binary_size(p.bytes_total)),
                        if run.state == RunState::Running {
                            per_second(p.bytes_per_second)
                        } else {
                            "-".to_owned()
                        },
                    )
                },
            );
            (run.partition.to_string(), files, bytes, rate)
        };
        table.row(vec![
            run.activity_index.to_string(),
            partition,
            run.state.as_str().to_owned(),
            run.attempt.to_string(),
            node(run),
            files,
            bytes,
            rate,
            run.error.as_deref().map_or_else(|| "-".to_owned(), shorten),
        ]);
    }
    table
}

fn node(run: &RunView) -> String {
    run.node_name.clone().unwrap_or_else(|| "-".to_owned())
}

/// A rate in binary units: "12.5 MiB/s".
fn per_second(bytes_per_second: f64) -> String {
    // NaN, negative or infinite rates (a node's clock hiccup) read as none.
    let rate = if bytes_per_second.is_finite() { bytes_per_second.max(0.0) } else { 0.0 };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "display only; the rate is finite and not negative"
    )]
    let rate = rate.round() as u64;
    format!("{}/s", binary_size(rate))
}

fn kind(activity: &Activity) -> &'static str {
    match activity {
        Activity::Sleep { .. } => "sleep",
        Activity::Echo { .. } => "echo",
        Activity::Copy { .. } => "copy",
    }
}

/// One line of at most `DETAIL_CHARS` characters.
fn shorten(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= DETAIL_CHARS {
        return line;
    }
    let mut short: String = line.chars().take(DETAIL_CHARS - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::progress::fixtures::{copy_run, job_of};
    use crate::protocol::TransferProgress;
    use serde_json::json;

    fn lines_with<'a>(text: &'a str, word: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.contains(word)).collect()
    }

    #[test]
    fn copy_runs_show_files_bytes_rates_and_errors_under_the_jobs_totals() {
        let mut listing = copy_run(0, RunState::Succeeded, None);
        listing.result = Some(json!({"files": 3, "bytes": 3 << 20}));
        listing.node_name = Some("n1".into());
        let mut running = copy_run(
            1,
            RunState::Running,
            Some(
                json!({"bytes_done": 1 << 20, "bytes_total": 2 << 20, "files_done": 1, "files_total": 2, "bytes_per_second": 524_288.0}),
            ),
        );
        running.node_name = Some("n2".into());
        let mut failed =
            copy_run(2, RunState::Failed, Some(json!({"bytes_total": 1 << 20, "files_total": 1})));
        failed.error = Some("the sink refused big.bin: access denied".into());
        let text = job_text(&job_of(vec![listing, running, failed]));
        assert!(text.contains("  copied:  1.0 MiB of 3.0 MiB, 1 of 3 files, 512.0 KiB/s\n"), "{text}");
        assert!(!text.contains("\nRuns:"), "no sleep or echo runs: {text}");
        let listing = lines_with(&text, "(listing)");
        assert!(
            listing.len() == 1 && listing[0].contains("3 listed") && listing[0].contains("3.0 MiB"),
            "{text}"
        );
        let running = lines_with(&text, " n2 ");
        assert!(
            running.len() == 1 && running[0].contains("1/2") && running[0].contains("1.0 MiB/2.0 MiB"),
            "{text}"
        );
        assert!(running[0].contains("512.0 KiB/s"), "{text}");
        assert_eq!(lines_with(&text, "access denied").len(), 1, "{text}");
    }

    #[test]
    fn the_totals_are_the_hubs() {
        let mut job = job_of(vec![copy_run(0, RunState::Running, None)]);
        job.progress = Some(TransferProgress {
            bytes_done: 1 << 20,
            bytes_total: 4 << 20,
            files_done: 2,
            files_total: 8,
            bytes_per_second: 1024.0,
            ..TransferProgress::default()
        });
        let text = job_text(&job);
        assert!(text.contains("  copied:  1.0 MiB of 4.0 MiB, 2 of 8 files, 1.0 KiB/s\n"), "{text}");
    }

    #[test]
    fn echo_jobs_show_as_before() {
        let mut echo = copy_run(0, RunState::Succeeded, None);
        echo.activity = Activity::Echo { message: "hi".into(), partitions: 1 };
        echo.result = Some(json!({"echo": "hi"}));
        let text = job_text(&job_of(vec![echo]));
        assert!(!text.contains("copied:") && !text.contains("Copy runs"), "{text}");
        assert!(text.contains("\n\nRuns:\n  ACTIVITY  PARTITION  KIND  STATE"), "{text}");
        assert_eq!(lines_with(&text, "result {\"echo\":\"hi\"}").len(), 1, "{text}");
    }

    #[test]
    fn a_cancel_counts_the_runs_that_waited_and_lists_those_nodes_held() {
        let done = copy_run(0, RunState::Succeeded, None);
        let mut held = copy_run(1, RunState::Cancelled, None);
        held.node_name = Some("n2".into());
        let waiting = copy_run(2, RunState::Cancelled, None);
        let text = cancelled_text(&job_of(vec![done, held, waiting]));
        assert!(
            text.starts_with(
                "Cancelled job 'nightly' (id j): 2 run(s) cancelled, 1 of them waiting in the queue and 1 on nodes.\n"
            ),
            "{text}"
        );
        let rows = lines_with(&text, " n2");
        assert!(rows.len() == 1 && rows[0].contains(" copy "), "{text}");
    }

    #[test]
    fn following_says_how_far_a_job_is_and_why_it_did_not_succeed() {
        let mut listing = copy_run(0, RunState::Succeeded, None);
        listing.result = Some(json!({"files": 3, "bytes": 3 << 20}));
        let running = copy_run(
            1,
            RunState::Running,
            Some(
                json!({"bytes_done": 1 << 20, "bytes_total": 2 << 20, "files_done": 1, "files_total": 2, "bytes_per_second": 524_288.0}),
            ),
        );
        let job = job_of(vec![listing.clone(), running]);
        assert_eq!(live_line(&job), "running: 1.0 MiB of 3.0 MiB, 1 of 3 files, 512.0 KiB/s; 1/2 runs ended");
        assert_eq!(ending(&job), None);

        let mut echo = copy_run(0, RunState::Queued, None);
        echo.activity = Activity::Echo { message: "hi".into(), partitions: 1 };
        assert_eq!(live_line(&job_of(vec![echo])), "running: 0/1 runs ended");

        let mut failed = copy_run(2, RunState::Failed, None);
        failed.error = Some("the sink refused big.bin".into());
        failed.node_name = Some("n2".into());
        let mut job = job_of(vec![listing.clone(), failed]);
        job.state = RunState::Failed;
        assert_eq!(
            ending(&job).unwrap(),
            "error: job 'nightly' (id j) failed; 1 of its 2 runs failed:\n  activity 0, partition 2, attempt 1 on n2: the sink refused big.bin\n"
        );
        let mut job = job_of(vec![listing, copy_run(1, RunState::Cancelled, None)]);
        job.state = RunState::Cancelled;
        assert_eq!(ending(&job).unwrap(), "error: job 'nightly' (id j) was cancelled.\n");
    }

    #[test]
    fn rates_are_never_negative_or_nan() {
        assert_eq!(per_second(f64::NAN), "0 B/s");
        assert_eq!(per_second(-5.0), "0 B/s");
        assert_eq!(per_second(1536.0), "1.5 KiB/s");
    }
}
