//! `gatehouse generate man|completions DIR` (hidden): man pages and shell completions written
//! from the clap definitions, so they can't drift from `--help`. The package build
//! (`installer/build-deb.sh`) runs it; nothing here reads or writes outside DIR.

use anyhow::Context as _;
use clap::{CommandFactory as _, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The name completions complete and man pages are titled with.
const BIN: &str = "gatehouse";

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write the man pages (gatehouse.1 and one per subcommand, e.g. gatehouse-node-run.1) into DIR.
    Man {
        /// The folder to write into (made if missing).
        dir: PathBuf,
    },
    /// Write shell completions into DIR: gatehouse.bash, _gatehouse (zsh), gatehouse.fish.
    Completions {
        /// The folder to write into (made if missing).
        dir: PathBuf,
    },
}

pub fn run(command: GenerateCommand) -> anyhow::Result<ExitCode> {
    let written = match command {
        GenerateCommand::Man { dir } => man_pages(&dir)?,
        GenerateCommand::Completions { dir } => completions(&dir)?,
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One page per visible command, named the way `man gatehouse-node-run` finds it.
fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut command = super::Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    collect_pages(&command, &mut pages);
    let mut written = Vec::new();
    for page in pages {
        let man = clap_mangen::Man::new(page);
        let mut roff = Vec::new();
        man.render(&mut roff).context("rendering a man page")?;
        written.push(write_file(dir, &man.get_filename(), &roff)?);
    }
    Ok(written)
}

/// `command` and its visible subcommands, depth first.
fn collect_pages(command: &clap::Command, pages: &mut Vec<clap::Command>) {
    pages.push(command.clone());
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        collect_pages(sub, pages);
    }
}

fn completions(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use clap_complete::{Generator as _, Shell};
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = super::Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, BIN, &mut script);
        written.push(write_file(dir, &shell.file_name(BIN), &script)?);
    }
    Ok(written)
}

/// Writes `bytes` to DIR/NAME through a temp file renamed over it, so a cut-off run leaves
/// no half-written page. Mode follows the umask: these files are public.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.{}.tmp", crate::encoding::random_hex::<6>()));
    let result = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, &path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(path)
}
