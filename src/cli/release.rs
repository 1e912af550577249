//! `gatehouse release keygen | sign` (the release key pair and signatures, on the machine
//! that builds releases) and `gatehouse hub release publish | list` (a running hub's
//! releases, with the admin token). The signing itself is `crate::release`'s.

use super::admin::{Connection, Table, execute, timestamp_with_age};
use crate::encoding::binary_size;
use crate::protocol::{NewRelease, RELEASE_PART_BYTES};
use crate::release::{self, KeyPair};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Make an ed25519 key pair for signing releases: DIR/release.key (private, owner-only,
    /// never printed; keep it off the hub) and DIR/release.pub (give it to `hub serve
    /// --release-key`). Existing files are never replaced.
    Keygen {
        /// The folder to write the two files into (made if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a release file with the private key: writes FILE.sig next to it.
    Sign {
        /// The release file (a gatehouse binary).
        file: PathBuf,
        /// The private key file (release.key from `release keygen`).
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum HubReleaseCommand {
    /// Publish a signed release: nodes of its platform are offered it in their heartbeat
    /// answers and take it with `gatehouse node update`. The hub refuses it unless the
    /// signature verifies against a key it trusts (`hub serve --release-key`).
    Publish(PublishArgs),
    /// List the hub's releases.
    List {
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The release file.
    pub file: PathBuf,
    /// Its version (what the binary reports; nodes running an older one are offered it).
    #[arg(long)]
    pub version: String,
    /// Its signature (default: FILE.sig, as `release sign` writes it).
    #[arg(long, value_name = "FILE.sig")]
    pub signature: Option<PathBuf>,
    /// The platform it runs on (default: this machine's, e.g. linux-x86_64).
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

pub fn run(command: ReleaseCommand) -> anyhow::Result<ExitCode> {
    match command {
        ReleaseCommand::Keygen { out } => {
            keygen(&out)?;
            println!(
                "wrote {} (private: keep it safe and off the hub) and {} (public: hub serve --release-key {})",
                out.join(release::PRIVATE_FILE).display(),
                out.join(release::PUBLIC_FILE).display(),
                out.join(release::PUBLIC_FILE).display()
            );
        }
        ReleaseCommand::Sign { file, key } => {
            let written = sign(&file, &key)?;
            println!("wrote {}", written.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_hub(command: HubReleaseCommand) -> anyhow::Result<ExitCode> {
    match command {
        HubReleaseCommand::Publish(args) => execute(publish(args)),
        HubReleaseCommand::List { connection } => execute(list(connection)),
    }
}

/// Writes a fresh key pair into `dir`; neither file may exist.
fn keygen(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (private, public) = (dir.join(release::PRIVATE_FILE), dir.join(release::PUBLIC_FILE));
    for path in [&private, &public] {
        anyhow::ensure!(
            std::fs::symlink_metadata(path).is_err(),
            "{} exists already; a key pair is never replaced (releases signed with it would no longer verify): choose another --out",
            path.display()
        );
    }
    let pair = KeyPair::generate();
    let commit = |path: &Path, line: String| {
        crate::machine::PendingFile::create(path)
            .and_then(|file| file.commit_new(format!("{line}\n").as_bytes()))
            .with_context(|| format!("writing {}", path.display()))
    };
    // Both owner-only (0600) as made; the public one may be shared freely.
    commit(&private, pair.private_line())?;
    commit(&public, pair.public().to_line())?;
    Ok(())
}

/// Signs `file` with the private key at `key`; returns where the signature went.
fn sign(file: &Path, key: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(key).with_context(|| format!("reading the key {}", key.display()))?;
    let pair = KeyPair::parse(&text, &key.display().to_string())?;
    let sha256 = release::sha256_file(file)?;
    let mut out = file.as_os_str().to_owned();
    out.push(".sig");
    let out = PathBuf::from(out);
    crate::machine::write_atomic(&out, format!("{}\n", pair.sign(&sha256)).as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let client = args.connection.client()?;
    let signature_path = args.signature.clone().unwrap_or_else(|| {
        let mut path = args.file.as_os_str().to_owned();
        path.push(".sig");
        PathBuf::from(path)
    });
    let signature = std::fs::read_to_string(&signature_path).with_context(|| {
        format!("reading the signature {} (made by `gatehouse release sign`)", signature_path.display())
    })?;
    let size_bytes =
        std::fs::metadata(&args.file).with_context(|| format!("reading {}", args.file.display()))?.len();
    let sha256 = release::sha256_file(&args.file)?;
    let request = NewRelease {
        version: args.version.clone(),
        platform: args.platform.clone().unwrap_or_else(release::platform),
        size_bytes,
        sha256,
        signature: signature.trim().to_owned(),
    };
    let begun = client.begin_release(&request).await?;
    let mut file =
        std::fs::File::open(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let mut seq = 0u32;
    loop {
        let mut piece = Vec::with_capacity(RELEASE_PART_BYTES);
        (&mut file)
            .take(RELEASE_PART_BYTES as u64)
            .read_to_end(&mut piece)
            .with_context(|| format!("reading {}", args.file.display()))?;
        if piece.is_empty() {
            break;
        }
        client.put_release_part(&begun.id, seq, piece).await?;
        seq += 1;
    }
    let published = client.publish_release(&begun.id).await?;
    args.connection.answer(&published, || {
        format!(
            "release {} for {} published ({}, signed by key {}); nodes of that platform running an older version are offered it\n",
            published.version,
            published.platform,
            binary_size(published.size_bytes),
            published.key_id
        )
    })
}

async fn list(connection: Connection) -> anyhow::Result<()> {
    let releases = connection.client()?.releases().await?;
    connection.answer(&releases, || {
        if releases.is_empty() {
            return "no releases yet; publish one with: gatehouse hub release publish FILE --version V\n"
                .to_owned();
        }
        let mut table = Table::new(&["VERSION", "PLATFORM", "SIZE", "KEY", "STATE", "CREATED"]);
        for r in &releases {
            table.row(vec![
                r.version.clone(),
                r.platform.clone(),
                binary_size(r.size_bytes),
                r.key_id.clone(),
                if r.published { "published".to_owned() } else { "incomplete".to_owned() },
                timestamp_with_age(r.created_ms),
            ]);
        }
        table.render()
    })
}
