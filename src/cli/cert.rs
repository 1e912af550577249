//! `gatehouse cert …`: the certificate checker on the command line.

use crate::cert::{self, Options};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Check whether a certificate file can encrypt the peer channel, rule by rule.
    ///
    /// Exit code 0: accepted (with or without warnings); 1: rejected; 2: the file can't be read.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Certificate file: PEM (leaf, intermediates, optional key), DER (.cer/.der) or PKCS#12 (.pfx/.p12).
    pub file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Password of the PFX file or encrypted key. Visible to other users in the process list:
    /// prefer --password-stdin or the GATEHOUSE_CERT_PASSWORD environment variable.
    #[arg(long, env = "GATEHOUSE_CERT_PASSWORD", hide_env_values = true, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// PEM file of extra trusted root certificates (e.g. your organisation's CA).
    #[arg(long, value_name = "PEM")]
    pub roots: Option<PathBuf>,
    /// Trust only the --roots file, not the public web roots.
    #[arg(long)]
    pub no_system_roots: bool,
    /// The name peers use to reach this node; checked against the DNS SANs.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Check validity at this time instead of now (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub at: Option<OffsetDateTime>,
}

fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("{e}; expected RFC 3339, e.g. 2030-01-01T00:00:00Z"))
}

pub fn run(command: CertCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let password = if args.password_stdin { Some(super::stdin_line("the password")?) } else { args.password };
    let extra_roots = super::roots_arg(args.roots.as_deref())?;
    let options =
        Options { password, extra_roots, public_roots: !args.no_system_roots, host: args.host, at: args.at };
    let report = cert::check_file(&args.file, &options)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(ExitCode::from(report.verdict.exit_code()))
}
