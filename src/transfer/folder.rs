//! Folder sources: listing a folder once (with include/exclude globs over relative paths) and
//! grouping its files into parts, by bytes and by count, many more parts than nodes so the
//! dispatcher can spread them and a lost part costs little.

use super::TransferError;
use crate::protocol::ListedFile;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// A part closes when it reaches this many bytes (a larger file is a part of its own)…
const PART_BYTES: u64 = 64 << 20;
/// …or this many files.
const PART_FILES: usize = 256;
/// Listings are split into at least this many parts when they have enough files, so every
/// node of a 4-node gateway gets several.
const MIN_PARTS: usize = 16;

/// Lists every regular file under `root` that `include` (all, when empty) and not `exclude`
/// match, sorted by path. Symbolic links are skipped, as rclone does by default.
pub async fn list(
    node: &str,
    root: &Path,
    include: &[String],
    exclude: &[String],
) -> Result<Vec<ListedFile>, TransferError> {
    let include = glob_set(include)?;
    let exclude = glob_set(exclude)?;
    let (node, root) = (node.to_owned(), root.to_owned());
    tokio::task::spawn_blocking(move || list_blocking(&node, &root, include.as_ref(), exclude.as_ref()))
        .await
        .map_err(|e| TransferError::Source(format!("listing stopped: {e}")))?
}

fn list_blocking(
    node: &str,
    root: &Path,
    include: Option<&GlobSet>,
    exclude: Option<&GlobSet>,
) -> Result<Vec<ListedFile>, TransferError> {
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(TransferError::Source(format!(
                "the source folder {} is not a folder on node {node}; name a folder",
                root.display()
            )));
        }
        Err(e) => return Err(unseen(node, root, &e)),
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_owned();
            TransferError::Source(format!(
                "node {node} can't read {} while listing the source folder: {}; check its permissions",
                path.display(),
                e.io_error().map_or_else(|| e.to_string(), ToString::to_string)
            ))
        })?;
        if !entry.file_type().is_file() {
            if entry.file_type().is_symlink() {
                tracing::warn!(path = %entry.path().display(), "skipping a symbolic link in the source folder");
            }
            continue;
        }
        let relative = relative_name(root, entry.path())?;
        if include.is_some_and(|set| !set.is_match(&relative))
            || exclude.is_some_and(|set| set.is_match(&relative))
        {
            continue;
        }
        let meta = entry.metadata().map_err(|e| {
            TransferError::Source(format!("node {node} can't read {}: {e}", entry.path().display()))
        })?;
        files.push(ListedFile { path: relative, size: meta.len(), modified_ms: modified_ms(&meta) });
    }
    Ok(files)
}

/// The sentence for a source folder a node can't see.
pub fn unseen(node: &str, root: &Path, error: &std::io::Error) -> TransferError {
    TransferError::Source(format!(
        "node {node} can't see the source folder {} ({error}); mount the share at that same path on every node of the gateway",
        root.display()
    ))
}

/// `path` relative to `root`, with `/` between names; names must be UTF-8 to become object keys.
fn relative_name(root: &Path, path: &Path) -> Result<String, TransferError> {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let mut names = Vec::new();
    for name in relative {
        let name = name.to_str().ok_or_else(|| {
            TransferError::Source(format!(
                "the file name {} is not valid UTF-8, so it can't name an object; rename it",
                path.display()
            ))
        })?;
        if name.chars().any(|c| c.is_ascii_control()) {
            return Err(TransferError::Source(format!(
                "the file name {:?} has control characters, which object keys can't hold; rename it",
                path.display()
            )));
        }
        names.push(name);
    }
    Ok(names.join("/"))
}

/// A file's modification time in milliseconds since the Unix epoch (0 when unknown).
pub fn modified_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

fn glob_set(globs: &[String]) -> Result<Option<GlobSet>, TransferError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        // `*` stays within one name, `**` crosses folders, as in rclone and .gitignore.
        let glob = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .or_else(|_| Glob::new(glob))
            .map_err(|e| TransferError::Source(format!("the glob {glob:?} can't be read: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| TransferError::Source(format!("the globs can't be used together: {e}")))
}

/// Groups a listing into parts: consecutive files (so a part stays within nearby folders) up
/// to a byte and a file budget sized so the listing makes at least [`MIN_PARTS`] parts.
pub fn group(files: Vec<ListedFile>) -> Vec<Vec<ListedFile>> {
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let min_parts = MIN_PARTS.min(files.len()).max(1);
    let max_parts = super::spec::MAX_PARTITIONS as usize;
    // Huge listings get bigger parts, so they stay within the hub's limit on parts.
    let part_bytes = (total_bytes / min_parts as u64)
        .clamp(1 << 20, PART_BYTES)
        .max(total_bytes.div_ceil(max_parts as u64 / 2).saturating_add(1));
    let part_files =
        files.len().div_ceil(min_parts).clamp(1, PART_FILES).max(files.len().div_ceil(max_parts / 2));
    let mut parts: Vec<Vec<ListedFile>> = Vec::new();
    let mut current: Vec<ListedFile> = Vec::new();
    let mut current_bytes = 0;
    for file in files {
        if !current.is_empty() && (current.len() >= part_files || current_bytes + file.size > part_bytes) {
            parts.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += file.size;
        current.push(file);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// The path of a listed file on this node.
pub fn local_path(root: &Path, file: &ListedFile) -> PathBuf {
    root.join(&file.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> ListedFile {
        ListedFile { path: path.into(), size, modified_ms: 0 }
    }

    #[test]
    fn many_small_files_make_at_least_sixteen_parts() {
        let files: Vec<_> = (0..2000).map(|i| file(&format!("f{i:04}"), 1 << 20)).collect();
        let parts = group(files.clone());
        assert!(parts.len() >= MIN_PARTS, "{} parts", parts.len());
        let flattened: Vec<_> = parts.into_iter().flatten().collect();
        assert_eq!(flattened, files, "every file once, in order");
    }

    #[test]
    fn a_huge_listing_stays_within_the_hubs_limit_on_parts() {
        let files: Vec<_> = (0..3_000_000).map(|i| file(&format!("f{i}"), 1000)).collect();
        let parts = group(files);
        assert!(parts.len() <= super::super::spec::MAX_PARTITIONS as usize, "{} parts", parts.len());
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 3_000_000);
    }

    #[test]
    fn a_large_file_is_a_part_of_its_own() {
        let parts = group(vec![file("a", 10), file("big", 1 << 30), file("c", 10)]);
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1]);
    }

    #[test]
    fn an_empty_listing_has_no_parts() {
        assert!(group(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn globs_match_relative_paths() {
        let dir = tempfile::tempdir().expect("a temp dir");
        for path in ["a.csv", "sub/b.csv", "sub/c.txt", "tmp/d.csv"] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, b"x").expect("write");
        }
        let names = |include: &[&str], exclude: &[&str]| {
            let include: Vec<String> = include.iter().map(ToString::to_string).collect();
            let exclude: Vec<String> = exclude.iter().map(ToString::to_string).collect();
            let root = dir.path().to_owned();
            async move {
                list("n1", &root, &include, &exclude)
                    .await
                    .expect("listed")
                    .into_iter()
                    .map(|f| f.path)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(names(&[], &[]).await, ["a.csv", "sub/b.csv", "sub/c.txt", "tmp/d.csv"]);
        assert_eq!(names(&["**/*.csv"], &["tmp/**"]).await, ["a.csv", "sub/b.csv"]);
        assert_eq!(names(&["*.csv"], &[]).await, ["a.csv"]);
    }

    #[tokio::test]
    async fn a_missing_folder_names_the_node_and_the_path() {
        let error =
            list("n2", Path::new("/nonexistent/exports"), &[], &[]).await.expect_err("refused").to_string();
        assert!(error.contains("node n2") && error.contains("/nonexistent/exports"), "{error}");
    }
}
