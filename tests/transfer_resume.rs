//! Resume, not restart: a copy part whose attempt dies mid-way (its checkpoints stop being
//! taken, as when the hub gives the run to another attempt) leaves nothing under a final name,
//! and the next attempt, given the last checkpoint, finishes the same upload, sends less than
//! the part's size again and leaves no staging file or unfinished upload behind. Against real
//! S3 servers (SeaweedFS and moto on loopback) and a real folder.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use gatehouse::protocol::{Activity, CopySink, CopySource, ListedFile, Part, TransferProgress};
use gatehouse::transfer::{self, Checkpoint, Outcome, Reporter, TransferError};
use std::path::Path;
use std::sync::Mutex;

/// Takes checkpoints until one would record a second stored part of a large upload, then
/// answers as a hub that gave the run away: attempt 1 dies with one part stored.
struct DyingReporter {
    dies: bool,
    last: Mutex<Option<Checkpoint>>,
}

impl DyingReporter {
    fn new(dies: bool) -> Self {
        DyingReporter { dies, last: Mutex::new(None) }
    }
}

impl Reporter for DyingReporter {
    fn progress(&self, _progress: TransferProgress) {}

    async fn checkpoint(
        &self,
        _progress: TransferProgress,
        checkpoint: &Checkpoint,
    ) -> Result<(), TransferError> {
        let stored = checkpoint.upload.as_ref().map_or(0, |u| u.parts.iter().flatten().count());
        if self.dies && stored >= 2 {
            return Err(TransferError::Superseded);
        }
        *self.last.lock().unwrap() = Some(checkpoint.clone());
        Ok(())
    }
}

fn source_files(root: &Path) -> Vec<ListedFile> {
    let mut listed = Vec::new();
    let mut add = |name: &str, size: usize| {
        #[allow(clippy::cast_possible_truncation, reason = "test data: any byte will do")]
        let bytes: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8).collect();
        std::fs::write(root.join(name), &bytes).unwrap();
        let meta = std::fs::metadata(root.join(name)).unwrap();
        listed.push(ListedFile {
            path: name.to_owned(),
            size: meta.len(),
            modified_ms: gatehouse::transfer::folder::modified_ms(&meta),
        });
    };
    add("a-small.csv", 1000);
    add("b-large.bin", 41 << 20);
    add("c-small.csv", 2000);
    listed
}

fn activity(root: &Path, sink: CopySink) -> Activity {
    Activity::Copy {
        source: CopySource { folder: Some(root.to_str().unwrap().to_owned()), ..CopySource::default() },
        sink,
        overwrite: false,
    }
}

fn context<'a>(
    attempt: u32,
    reporter: &'a DyingReporter,
    credentials: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
    checkpoint: Checkpoint,
) -> transfer::Context<'a, DyingReporter> {
    transfer::Context {
        node: "n1",
        run: "run1",
        attempt,
        credentials,
        reporter,
        cancel: tokio_util::sync::CancellationToken::new(),
        bandwidth: transfer::bandwidth::Bandwidth::default(),
        checkpoint,
    }
}

/// Runs attempt 1 until it has stored one part of the large file, then attempt 2 from what it left; returns the
/// bytes attempt 2 sent.
async fn die_then_resume(
    activity: &Activity,
    part: &Part,
    credential: Option<String>,
    during: impl Fn(),
) -> u64 {
    let credentials = move |_: &str| credential.clone();
    let dying = DyingReporter::new(true);
    let first =
        transfer::execute(activity, part, &context(1, &dying, &credentials, Checkpoint::default())).await;
    assert!(matches!(first, Err(TransferError::Superseded)), "{first:?}");
    let left = dying.last.lock().unwrap().clone().unwrap();
    assert!(left.upload.as_ref().is_some_and(|u| u.parts.iter().flatten().count() > 0), "{left:?}");
    during();

    let finishing = DyingReporter::new(false);
    let second =
        transfer::execute(activity, part, &context(2, &finishing, &credentials, left)).await.unwrap();
    let Outcome::Done(result) = second else { panic!("a part's result") };
    result["bytes_sent"].as_u64().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

#[test]
fn an_s3_upload_cut_off_mid_way_is_finished_by_the_next_attempt() {
    cut_off_and_resumed(&common::s3::SeaweedFs::start());
}

#[test]
fn an_upload_cut_off_mid_way_at_a_second_s3_implementation_moto_is_finished_too() {
    cut_off_and_resumed(&common::moto::Moto::start());
}

/// An attempt superseded mid-upload to `s3` leaves nothing under the final name and its
/// upload open; the next one finishes that upload, sending less than the whole again.
fn cut_off_and_resumed(s3: &common::s3::S3Api) {
    let source = tempfile::tempdir().unwrap();
    let files = source_files(source.path());
    let total: u64 = files.iter().map(|f| f.size).sum();
    let sink = CopySink {
        url: format!("s3://{}/resume/", s3.bucket()),
        endpoint: Some(s3.endpoint()),
        region: Some(s3.region().to_owned()),
        credential: Some("lake".into()),
        ca_file: None,
    };
    let activity = activity(source.path(), sink);
    let part = Part::Files { files: files.clone() };
    let sent = runtime().block_on(die_then_resume(&activity, &part, Some(s3.credential()), || {
        let keys: Vec<String> = s3.list_objects("resume/").into_iter().map(|(k, _)| k).collect();
        assert!(
            !keys.contains(&"resume/b-large.bin".to_owned()),
            "nothing under the final name yet: {keys:?}"
        );
        assert_eq!(s3.list_multipart_uploads("resume/").len(), 1, "the cut-off upload is still open");
    }));
    assert!(sent < total, "sent {sent} of {total} bytes again");
    for file in &files {
        let expected = std::fs::read(source.path().join(&file.path)).unwrap();
        assert!(s3.get_object(&format!("resume/{}", file.path)) == expected, "{} byte for byte", file.path);
    }
    assert!(s3.list_multipart_uploads("").is_empty(), "no unfinished upload left");
}

#[test]
fn a_folder_copy_cut_off_mid_way_leaves_no_partial_file_and_resumes() {
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let files = source_files(source.path());
    let total: u64 = files.iter().map(|f| f.size).sum();
    let sink = CopySink { url: format!("file://{}/", target.path().display()), ..CopySink::default() };
    let activity = activity(source.path(), sink);
    let part = Part::Files { files: files.clone() };
    let sent = runtime().block_on(die_then_resume(&activity, &part, None, || {
        assert!(!target.path().join("b-large.bin").exists(), "nothing under the final name yet");
    }));
    assert!(sent < total, "sent {sent} of {total} bytes again");
    let mut names: Vec<String> = std::fs::read_dir(target.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a-small.csv", "b-large.bin", "c-small.csv"], "no staging file left");
    for file in &files {
        let expected = std::fs::read(source.path().join(&file.path)).unwrap();
        assert!(std::fs::read(target.path().join(&file.path)).unwrap() == expected, "{}", file.path);
    }
}
