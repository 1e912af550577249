//! `gatehouse job …`: submit jobs to a gateway through the hub and follow their activity runs.
//! Uses the admin client and conventions of `admin` (token, `--hub`, `--json`, exit codes).

use super::admin::{Connection, EXIT_CODES, Table, emit, emit_json, execute, indent, timestamp_with_age};
use crate::protocol::{Activity, JobSpec, JobView};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// How much of a run's result or error the table shows.
const DETAIL_CHARS: usize = 60;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job to a gateway from a JSON job spec.
    ///
    /// The spec: {"name": "copy-1", "activities": [{"kind": "echo", "message": "hi",
    /// "partitions": 2}, {"kind": "sleep", "millis": 500}]}.
    #[command(after_help = EXIT_CODES)]
    Submit(SubmitArgs),
    /// Show a job and each of its activity runs: state, attempt and node.
    #[command(after_help = EXIT_CODES)]
    Show(ShowArgs),
    /// List a gateway's recent jobs, newest first.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
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
    #[command(flatten)]
    pub connection: Connection,
}

pub fn run(command: JobCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobCommand::Submit(args) => {
            // A spec that can't be read is a usage problem: settle it before the network.
            let spec = read_spec(&args.file)?;
            execute(submit(args, spec))
        }
        JobCommand::Show(args) => execute(show(args)),
        JobCommand::List(args) => execute(list(args)),
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
    if args.connection.json {
        return emit_json(&job);
    }
    emit(&format!(
        "Submitted job '{}' (id {}) to gateway '{}': {} run(s) queued.\nFollow it with: gatehouse job show {}\n",
        job.name,
        job.id,
        args.gateway,
        job.runs.len(),
        job.id
    ))
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let job = args.connection.client()?.job(&args.job).await?;
    if args.connection.json {
        return emit_json(&job);
    }
    emit(&job_text(&job))
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let jobs = args.connection.client()?.jobs(&args.gateway, args.limit).await?;
    if args.connection.json {
        return emit_json(&jobs);
    }
    if jobs.is_empty() {
        return emit(&format!(
            "No jobs on gateway '{}' yet; submit one with: gatehouse job submit {} FILE\n",
            args.gateway, args.gateway
        ));
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
    emit(&table.render())
}

fn job_text(job: &JobView) -> String {
    let mut out = format!(
        "Job '{}' (id {})\n  gateway: {}\n  state:   {}\n  created: {}\n\nRuns:\n",
        job.name,
        job.id,
        job.gateway_id,
        job.state.as_str(),
        timestamp_with_age(job.created_ms)
    );
    let mut table = Table::new(&["ACTIVITY", "PARTITION", "KIND", "STATE", "ATTEMPT", "NODE", "DETAIL"]);
    for run in &job.runs {
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
            run.node_name.clone().unwrap_or_else(|| "-".to_owned()),
            shorten(&detail),
        ]);
    }
    out.push_str(&indent(&table.render(), "  "));
    out
}

fn kind(activity: &Activity) -> &'static str {
    match activity {
        Activity::Sleep { .. } => "sleep",
        Activity::Echo { .. } => "echo",
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
