//! Sinks: where copies write, exactly once. Nothing appears under an object's final name until
//! it is complete: at S3, a conditional PUT (`If-None-Match: *`) for small objects and a
//! multipart upload, invisible until completed, for large ones; in a folder, a staging file
//! that is hard-linked (create-only) or renamed (overwrite) into place after an fsync. Every
//! object carries its SHA-256: S3 metadata `sha256`, or the `user.sha256` extended attribute
//! of a file where the file system keeps them (else it is computed again when needed).
//!
//! S3 goes through `object_store`; folders are written with `std::fs` directly, because
//! `object_store`'s local store can't resume a multipart upload, keep attributes, or complete
//! one without overwriting.

use super::{TransferError, spec};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};
use sha2::Digest as _;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The metadata key (`x-amz-meta-sha256`) and extended attribute that hold an object's SHA-256.
const SHA256_KEY: &str = "sha256";
const SHA256_XATTR: &str = "user.sha256";

/// The most one write call hands a folder sink's page cache. Linux sizes a page-cache folio
/// by the write that makes it: an 8 MiB write takes 2 MiB folios, which must come from the
/// largest free blocks, and in a VM that reports free memory to its host (virtio-balloon free
/// page reporting, as in Firecracker or Cloud Hypervisor) those are the blocks the host has
/// taken back and must fault in again, page by page. Measured on such a VM with `dd` into
/// memory left free for 15 s: 8 MiB writes 210–260 MB/s, 32 KiB writes 0.6–1.2 GB/s; with
/// memory just freed, both about 1.1 GB/s. 32 KiB costs 256 calls per 8 MiB part: nothing next
/// to the copy.
const WRITE_PIECE: usize = 32 * 1024;

/// `data` in pieces of at most [`WRITE_PIECE`] bytes, in order.
fn pieces(data: &PutPayload) -> impl Iterator<Item = &[u8]> {
    data.into_iter().flat_map(|chunk| chunk.chunks(WRITE_PIECE))
}

/// A sink, opened for one run attempt; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    inner: Inner,
    /// What to call it in sentences: the sink URL.
    name: String,
    /// The node writing, for sentences: a fault may be this node's alone (its disk, its
    /// network, its copy of a credential).
    node: String,
    /// Prepended to every relative key (`exports/`), empty or ending in `/`.
    prefix: String,
    /// Names this attempt's staging files, so the attempt that takes over finds and removes
    /// what a dead one left.
    staging_tag: String,
    /// The run's attempt writing: from the second on, what earlier ones left is looked for.
    attempt: u32,
}

#[derive(Clone)]
enum Inner {
    S3 {
        store: Arc<AmazonS3>,
        bucket: String,
        /// The endpoint URL, or what stands for AWS, for sentences.
        endpoint: String,
        /// The node credential that holds its keys, for sentences.
        credential: String,
        /// The calls `store` can't make.
        calls: super::s3calls::S3Calls,
    },
    Folder {
        root: PathBuf,
        /// The folders this attempt made or found, so each file needn't ask again.
        folders: Folders,
    },
}

/// Folders known to exist under a folder sink: a part's files each skip the mkdir and stat
/// that `create_dir_all` costs once their folder is known. A folder removed meanwhile is
/// made again when a file can't be created in it.
#[derive(Clone, Default)]
struct Folders(Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>);

impl Folders {
    fn ensure(&self, dir: &Path) -> std::io::Result<()> {
        if self.0.lock().is_ok_and(|known| known.contains(dir)) {
            return Ok(());
        }
        std::fs::create_dir_all(dir)?;
        if let Ok(mut known) = self.0.lock() {
            known.insert(dir.to_owned());
        }
        Ok(())
    }

    fn forget(&self, dir: &Path) {
        if let Ok(mut known) = self.0.lock() {
            known.remove(dir);
        }
    }
}

/// What a write found at the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The object was written.
    Written,
    /// An identical object (size and SHA-256) was there already; nothing was written.
    Same,
}

/// An object already at the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub size: u64,
    /// Its SHA-256 as stored with it (hex), when it has one.
    pub sha256: Option<String>,
}

/// A folder sink's staging file being written in order and hashed as it goes.
pub struct Staging {
    file: std::fs::File,
    /// The staging file relative to the sink's root, for [`Sink::complete`] and [`Sink::abort`].
    pub upload_id: String,
    /// The final name, for sentences.
    target: PathBuf,
    hasher: sha2::Sha256,
    /// Bytes written so far.
    pub size: u64,
}

impl Staging {
    /// Appends `data`. A blocking write: call it off the async threads.
    pub fn write(&mut self, data: &[u8]) -> Result<(), TransferError> {
        for piece in data.chunks(WRITE_PIECE) {
            self.file.write_all(piece).map_err(|e| folder_error(&self.target, &e))?;
        }
        self.hasher.update(data);
        self.size += data.len() as u64;
        Ok(())
    }

    /// The SHA-256 (hex) of everything written; [`Sink::complete`] makes it durable.
    pub fn finish(self) -> String {
        crate::encoding::hex(&self.hasher.finalize())
    }
}

/// A small file written under its staging name at a folder sink, waiting for
/// [`Sink::commit`]. Dropped uncommitted (a failed or cancelled copy), its staging file goes.
pub struct Staged {
    /// Open until committed: `fdatasync` on the descriptor that wrote is the one sure to report
    /// a write-back error (one opened later may miss it).
    file: Option<std::fs::File>,
    staging: PathBuf,
    target: PathBuf,
    key: String,
    sha256: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.staging);
        }
    }
}

/// Staged files synced together on this many threads: the disk sees several requests at
/// once (merged, and one journal commit for many), without a thread per file.
const SYNC_THREADS: usize = 4;
/// Aborts of one upload before giving up on it (some 6 s in all).
const ABORT_TRIES: usize = 6;

/// Makes the data of every staged file durable, on up to [`SYNC_THREADS`] threads.
fn sync_all_data(staged: &[(usize, Staged)]) -> Result<(), TransferError> {
    let sync = |group: &[(usize, Staged)]| -> Result<(), TransferError> {
        for (_, staged) in group {
            if let Some(file) = &staged.file {
                file.sync_data().map_err(|e| folder_error(&staged.target, &e))?;
            }
        }
        Ok(())
    };
    if staged.len() <= 1 {
        return sync(staged);
    }
    let per_thread = staged.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            staged.chunks(per_thread).map(|group| scope.spawn(move || sync(group))).collect();
        handles.into_iter().try_for_each(|handle| {
            handle.join().unwrap_or_else(|_| Err(TransferError::Sink("a file sync stopped".into())))
        })
    })
}

/// Syncs each folder, so the names just placed in it are durable.
fn sync_dirs(dirs: &[PathBuf]) -> Result<(), TransferError> {
    for dir in dirs.iter().filter(|d| d.exists()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| folder_error(dir, &e))?;
    }
    Ok(())
}

impl Sink {
    /// Opens `spec` on `node` for `run`'s `attempt`; `credential` is the value of the S3
    /// credential.
    pub fn open(
        spec: &spec::Sink,
        credential: Option<&str>,
        node: &str,
        run: &str,
        attempt: u32,
    ) -> Result<Sink, TransferError> {
        let staging_tag = format!("gh-{run}-{attempt}");
        match spec {
            spec::Sink::File { root } => Ok(Sink {
                name: format!("file://{}", root.display()),
                node: node.to_owned(),
                inner: Inner::Folder { root: root.clone(), folders: Folders::default() },
                prefix: String::new(),
                staging_tag,
                attempt,
            }),
            spec::Sink::S3 { bucket, prefix, endpoint, region, credential: credential_name, ca_file } => {
                let (key_id, secret) = credential.and_then(|c| c.split_once(':')).ok_or_else(|| {
                    TransferError::Sink(format!(
                        "the credential {credential_name:?} on node {node} is not ACCESS_KEY_ID:SECRET_ACCESS_KEY; set it again with: gatehouse node credential set {credential_name}"
                    ))
                })?;
                let mut options = ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120));
                if endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) {
                    options = options.with_allow_http(true);
                }
                if let Some(ca_file) = ca_file {
                    let pem = std::fs::read(ca_file).map_err(|e| {
                        TransferError::Sink(format!(
                            "node {node} can't read the sink's ca_file {} ({e}); put the PEM file of the endpoint's CA at that path on every node",
                            ca_file.display()
                        ))
                    })?;
                    let certificates = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
                        TransferError::Sink(format!(
                            "the sink's ca_file {} holds no PEM certificate ({e}); give the PEM file of the CA that signed the endpoint's certificate",
                            ca_file.display()
                        ))
                    })?;
                    for certificate in certificates {
                        options = options.with_root_certificate(certificate);
                    }
                }
                // A few quick retries: an unreachable endpoint fails the run in seconds, with its
                // sentence, instead of object_store's default of minutes.
                let retry = RetryConfig {
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(30),
                    ..RetryConfig::default()
                };
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(key_id)
                    .with_secret_access_key(secret)
                    .with_client_options(options.clone())
                    .with_crypto_provider(super::digest::provider())
                    .with_retry(retry)
                    .with_checksum_algorithm(object_store::aws::Checksum::SHA256);
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                let store =
                    Arc::new(builder.build().map_err(|e| {
                        TransferError::Sink(format!("can't use the sink s3://{bucket}/: {e}"))
                    })?);
                let calls = super::s3calls::S3Calls::new(
                    Arc::clone(&store),
                    &options,
                    endpoint.as_deref(),
                    bucket,
                    region,
                )
                .map_err(|e| TransferError::Sink(format!("can't use the sink s3://{bucket}/: {e}")))?;
                Ok(Sink {
                    name: format!("s3://{bucket}/{prefix}"),
                    node: node.to_owned(),
                    inner: Inner::S3 {
                        store,
                        bucket: bucket.clone(),
                        endpoint: endpoint.clone().unwrap_or_else(|| format!("AWS S3 in {region}")),
                        credential: credential_name.clone(),
                        calls,
                    },
                    prefix: prefix.clone(),
                    staging_tag,
                    attempt,
                })
            }
        }
    }

    /// Runs blocking file work off the async threads; its sentences ("can't write …") name
    /// this node, whose disk it is.
    async fn on_node<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
    ) -> Result<T, TransferError> {
        blocking(work).await.map_err(|e| match e {
            TransferError::Sink(message) if message.starts_with("can't ") => {
                TransferError::Sink(format!("node {} {message}", self.node))
            }
            other => other,
        })
    }

    /// Whether this is a folder (`file://`) sink.
    pub fn is_folder(&self) -> bool {
        matches!(self.inner, Inner::Folder { .. })
    }

    /// The final key of `relative` (a `/`-separated path) at this sink.
    pub fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }

    /// The object at `key`, if there is one.
    pub async fn existing(&self, key: &str) -> Result<Option<Existing>, TransferError> {
        match &self.inner {
            Inner::S3 { store, .. } => {
                let options = GetOptions { head: true, ..GetOptions::default() };
                match store.get_opts(&object_path(key)?, options).await {
                    Ok(found) => Ok(Some(Existing {
                        size: found.meta.size,
                        sha256: found
                            .attributes
                            .get(&Attribute::Metadata(SHA256_KEY.into()))
                            .map(|v| v.as_ref().to_owned()),
                    })),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(self.s3_error(key, &e)),
                }
            }
            Inner::Folder { root, .. } => {
                let path = root.join(key);
                self.on_node(move || match std::fs::metadata(&path) {
                    Ok(meta) => Ok(Some(Existing { size: meta.len(), sha256: Some(file_sha256(&path)?) })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(folder_error(&path, &e)),
                })
                .await
            }
        }
    }

    /// Writes a small object in one request, create-only unless `overwrite`.
    pub async fn put(
        &self,
        key: &str,
        data: PutPayload,
        sha256: &str,
        overwrite: bool,
    ) -> Result<Put, TransferError> {
        match &self.inner {
            Inner::S3 { store, .. } => {
                let mode = if overwrite { PutMode::Overwrite } else { PutMode::Create };
                let options =
                    PutOptions { mode, attributes: sha256_attributes(sha256), ..PutOptions::default() };
                let path = object_path(key)?;
                // The body's SHA-256 is the object's, computed while it was read: not again.
                let written = match digest_bytes(sha256) {
                    Some(digest) => {
                        let body = data.clone();
                        super::digest::known(&body, digest, store.put_opts(&path, data, options)).await
                    }
                    None => store.put_opts(&path, data, options).await,
                };
                match written {
                    Ok(_) => Ok(Put::Written),
                    Err(
                        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
                    ) => self.compare(key, sha256).await,
                    Err(e) => Err(self.s3_error(key, &e)),
                }
            }
            Inner::Folder { .. } => {
                let staged = self.stage_small(key, data, sha256).await?;
                let mut puts = self.commit(vec![(0, staged)], overwrite).await?;
                Ok(puts.pop().map_or(Put::Written, |(_, put)| put))
            }
        }
    }

    /// Writes a small object to its staging name at a folder sink, neither durable nor
    /// published yet: [`Sink::commit`] does both for many at once, which costs the disk one
    /// wait for all of them instead of one each. The data's buffers go back to the budget as
    /// soon as they are written.
    pub async fn stage_small(
        &self,
        key: &str,
        data: PutPayload,
        sha256: &str,
    ) -> Result<Staged, TransferError> {
        let Inner::Folder { root, folders } = &self.inner else {
            return Err(TransferError::Sink(format!(
                "{} is not a folder; nothing is staged there",
                self.name
            )));
        };
        let staging = self.staging_path(root, key, "put")?;
        let (target, folders) = (root.join(key), folders.clone());
        let (key, sha256) = (key.to_owned(), sha256.to_owned());
        self.on_node(move || {
            let file = write_staging(&staging, &target, data, &sha256, &folders)?;
            Ok(Staged { file: Some(file), staging, target, key, sha256 })
        })
        .await
    }

    /// Commits staged files (each with its caller's index) exactly once: all made durable
    /// (`fdatasync`, a few at a time), then each linked create-only or renamed into place,
    /// then each folder they are in synced once, so every name returned is on disk before the
    /// caller's checkpoint says so. A name already taken is compared: the same content is
    /// [`Put::Same`], other content fails the commit. On a failure, the staging files not
    /// yet published are removed.
    pub async fn commit(
        &self,
        staged: Vec<(usize, Staged)>,
        overwrite: bool,
    ) -> Result<Vec<(usize, Put)>, TransferError> {
        let Inner::Folder { root, .. } = &self.inner else {
            return Err(TransferError::Sink(format!(
                "{} is not a folder; nothing is staged there",
                self.name
            )));
        };
        let root = root.clone();
        let placed = self
            .on_node(move || {
                sync_all_data(&staged)?;
                let mut placed = Vec::with_capacity(staged.len());
                let mut keys = Vec::with_capacity(staged.len());
                for (tag, mut file) in staged {
                    let written = publish(&file.staging, &file.target, overwrite)?;
                    // Published (or refused and removed): nothing for Drop to clean up.
                    file.file = None;
                    keys.push(file.key.clone());
                    placed.push((tag, written, file.key.clone(), file.sha256.clone()));
                }
                sync_dirs(&folders(&root, &keys))?;
                Ok(placed)
            })
            .await?;
        let mut puts = Vec::with_capacity(placed.len());
        for (tag, written, key, sha256) in placed {
            let put = if written { Put::Written } else { self.compare(&key, &sha256).await? };
            puts.push((tag, put));
        }
        Ok(puts)
    }

    /// Starts a large object's upload; nothing is visible under `key` until [`Self::complete`].
    /// At S3 `sha256` goes with it; empty when it isn't known yet ([`Self::attach_sha256`]).
    pub async fn create_upload(&self, key: &str, sha256: &str) -> Result<String, TransferError> {
        match &self.inner {
            Inner::S3 { store, .. } => {
                // A streamed export learns its SHA-256 only at the end: see attach_sha256.
                let attributes =
                    if sha256.is_empty() { Attributes::new() } else { sha256_attributes(sha256) };
                let options = PutMultipartOptions { attributes, ..PutMultipartOptions::default() };
                store
                    .create_multipart_opts(&object_path(key)?, options)
                    .await
                    .map_err(|e| self.s3_error(key, &e))
            }
            Inner::Folder { root, .. } => {
                let staging = self.staging_path(root, key, "upload")?;
                let id = staging.strip_prefix(root).unwrap_or(&staging).to_string_lossy().into_owned();
                let target = root.join(key);
                self.on_node(move || {
                    if let Some(dir) = staging.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| folder_error(dir, &e))?;
                    }
                    std::fs::File::create(&staging).map(drop).map_err(|e| folder_error(&target, &e))
                })
                .await?;
                Ok(id)
            }
        }
    }

    /// Starts a staging file for `key` at a folder sink, to be written front to back (a
    /// query's output streams into it) and published with [`Sink::complete`]; `None` at S3,
    /// where an object's SHA-256 must be known when its upload starts.
    pub async fn stage(&self, key: &str) -> Result<Option<Staging>, TransferError> {
        let Inner::Folder { root, .. } = &self.inner else { return Ok(None) };
        let staging = self.staging_path(root, key, "upload")?;
        let upload_id = staging.strip_prefix(root).unwrap_or(&staging).to_string_lossy().into_owned();
        let target = root.join(key);
        self.on_node(move || {
            if let Some(dir) = staging.parent() {
                std::fs::create_dir_all(dir).map_err(|e| folder_error(dir, &e))?;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staging)
                .map_err(|e| folder_error(&target, &e))?;
            Ok(Some(Staging { file, upload_id, target, hasher: sha2::Sha256::new(), size: 0 }))
        })
        .await
    }

    /// Stores part `index` (0-based) of an upload; `part_size` places it in a staging file.
    pub async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        index: usize,
        part_size: u64,
        data: PutPayload,
    ) -> Result<String, TransferError> {
        match &self.inner {
            Inner::S3 { store, .. } => store
                .put_part(&object_path(key)?, &upload_id.to_owned(), index, data)
                .await
                .map(|part| part.content_id)
                .map_err(|e| self.s3_error(key, &e)),
            Inner::Folder { root, .. } => {
                let staging = Self::upload_path(root, upload_id)?;
                // Sentences name the file being written, not its hidden staging name.
                let target = root.join(key);
                let length = data.content_length();
                self.on_node(move || {
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&staging)
                        .map_err(|e| folder_error(&target, &e))?;
                    let mut offset = part_size.saturating_mul(index as u64);
                    for piece in pieces(&data) {
                        file.write_all_at(piece, offset).map_err(|e| folder_error(&target, &e))?;
                        offset += piece.len() as u64;
                    }
                    // The buffers go back to the budget now, not after the disk's wait.
                    drop(data);
                    // On disk before the checkpoint says so.
                    file.sync_data().map_err(|e| folder_error(&target, &e))
                })
                .await?;
                // The part's id only says it is stored: the whole file's SHA-256 is computed
                // from the source as it is read, so a part needs no digest of its own.
                Ok(format!("{index}:{length}"))
            }
        }
    }

    /// Completes an upload under its final name. The caller has made sure (with the hub) that
    /// its attempt is still the current one right before this.
    pub async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<String>,
        sha256: &str,
        overwrite: bool,
    ) -> Result<Put, TransferError> {
        match &self.inner {
            Inner::S3 { store, .. } => {
                let parts = parts.into_iter().map(|content_id| PartId { content_id }).collect();
                store
                    .complete_multipart(&object_path(key)?, &upload_id.to_owned(), parts)
                    .await
                    .map(|_| Put::Written)
                    .map_err(|e| self.s3_error(key, &e))
            }
            Inner::Folder { root, .. } => {
                let staging = Self::upload_path(root, upload_id)?;
                let (final_path, sha) = (root.join(key), sha256.to_owned());
                let written = self
                    .on_node(move || {
                        let file =
                            std::fs::File::open(&staging).map_err(|e| folder_error(&final_path, &e))?;
                        file.sync_all().map_err(|e| folder_error(&final_path, &e))?;
                        set_sha256_of(&file, &staging, &sha);
                        let placed = publish(&staging, &final_path, overwrite)?;
                        // The name is durable before the caller's checkpoint says it is done.
                        if let Some(dir) = final_path.parent() {
                            sync_dirs(&[dir.to_owned()])?;
                        }
                        Ok(placed)
                    })
                    .await?;
                if written { Ok(Put::Written) } else { self.compare(key, sha256).await }
            }
        }
    }

    /// Drops an unfinished upload and what it stored. Failures are only logged: an upload
    /// that can't be aborted now is invisible, and the attempt that takes over tries again.
    pub async fn abort(&self, key: &str, upload_id: &str) {
        let result = match &self.inner {
            Inner::S3 { store, calls, .. } => match object_path(key) {
                Ok(path) => abort_s3(store, calls, &path, key, upload_id).await,
                Err(e) => Err(e.to_string()),
            },
            Inner::Folder { root, .. } => match Self::upload_path(root, upload_id) {
                Ok(staging) => match std::fs::remove_file(&staging) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                },
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok(()) => tracing::info!(%key, "aborted an unfinished upload"),
            Err(e) => tracing::warn!(%key, "can't abort an unfinished upload: {e}"),
        }
    }

    /// Removes staging files that earlier attempts of this run left in the folders of `keys`
    /// (a folder sink only; S3 uploads are tracked in checkpoints), except `keep`.
    pub async fn sweep(&self, keys: &[String], keep: Option<&str>) -> Result<(), TransferError> {
        let Inner::Folder { root, .. } = &self.inner else { return Ok(()) };
        let run_tag =
            self.staging_tag.rsplit_once('-').map_or(self.staging_tag.as_str(), |(run, _)| run).to_owned();
        let dirs = folders(root, keys);
        let keep = keep.map(|k| root.join(k));
        self.on_node(move || {
            for dir in dirs {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    let ours = name.starts_with('.') && name.ends_with(".tmp") && name.contains(&format!(".{run_tag}-"));
                    if ours && keep.as_deref() != Some(entry.path().as_path()) {
                        tracing::info!(path = %entry.path().display(), "removing a staging file an earlier attempt left");
                        std::fs::remove_file(entry.path()).map_err(|e| folder_error(&entry.path(), &e))?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Stores `sha256` with the S3 object at `key`, written without it because its upload
    /// began before its content was known (a streamed export): a copy onto itself with the
    /// metadata, which leaves its content and name as they are. Nothing to do at a folder.
    pub async fn attach_sha256(&self, key: &str, sha256: &str) -> Result<(), String> {
        let Inner::S3 { calls, bucket, .. } = &self.inner else { return Ok(()) };
        calls.set_sha256(bucket, key, sha256).await
    }

    /// Aborts the multipart uploads open under `keys` at S3, except `keep`: what earlier
    /// attempts of this run left, checkpointed or not (one killed between creating an upload
    /// and checkpointing it leaves an upload the hub never heard of). Only an attempt after
    /// the first looks, and only under the keys its part writes in parts; one writer per key
    /// is assumed (an upload another job had open under the same key is aborted too, and that
    /// job's run fails saying so). Failures are only logged: a leftover upload is invisible.
    /// A folder sink's leftovers are staging files, which [`Self::sweep`] removes.
    pub async fn sweep_uploads(&self, keys: &[String], keep: Option<&str>) {
        let Inner::S3 { calls, .. } = &self.inner else { return };
        if self.attempt <= 1 {
            return;
        }
        for key in keys {
            match calls.open_uploads(key).await {
                Ok(ids) => {
                    for id in ids.iter().filter(|id| Some(id.as_str()) != keep) {
                        tracing::info!(%key, upload = %id, "aborting an upload an earlier attempt left");
                        self.abort(key, id).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(%key, "can't list the uploads an earlier attempt may have left: {e}");
                }
            }
        }
    }

    /// Makes the names written in the folders of `keys` durable (a folder sink; S3 needs nothing).
    pub async fn sync_folders(&self, keys: &[String]) -> Result<(), TransferError> {
        let Inner::Folder { root, .. } = &self.inner else { return Ok(()) };
        let dirs = folders(root, keys);
        self.on_node(move || sync_dirs(&dirs)).await
    }

    /// After a create-only write found an object there: the same one, or a sentence.
    async fn compare(&self, key: &str, sha256: &str) -> Result<Put, TransferError> {
        match self.existing(key).await? {
            Some(existing) if existing.sha256.as_deref() == Some(sha256) => Ok(Put::Same),
            _ => Err(self.differs(key)),
        }
    }

    /// The sentence for an object that is already at the sink with other content.
    pub fn differs(&self, key: &str) -> TransferError {
        TransferError::Sink(format!(
            "{}{key} already exists at the sink with different content; set \"overwrite\": true to replace it, or copy to another prefix",
            self.name.strip_suffix(&self.prefix).unwrap_or(&self.name)
        ))
    }

    /// Where a folder sink stages `key` for this attempt: a hidden name beside the final one.
    fn staging_path(&self, root: &Path, key: &str, what: &str) -> Result<PathBuf, TransferError> {
        let target = root.join(key);
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(TransferError::Sink(format!("{key} can't be a file name at {}", self.name)));
        };
        let nonce: u32 = rand::random();
        Ok(dir.join(format!(".{}.{}-{what}{nonce:08x}.tmp", name.to_string_lossy(), self.staging_tag)))
    }

    /// The staging file of an upload id (relative to the root), refusing ids that leave it.
    fn upload_path(root: &Path, upload_id: &str) -> Result<PathBuf, TransferError> {
        if upload_id.starts_with('/') || upload_id.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(TransferError::Sink(format!("the upload id {upload_id:?} is not this sink's")));
        }
        Ok(root.join(upload_id))
    }

    fn s3_error(&self, key: &str, error: &object_store::Error) -> TransferError {
        let Inner::S3 { bucket, endpoint, credential, .. } = &self.inner else {
            return TransferError::Sink(format!("{}: {error}", self.name));
        };
        let detail = error_chain(error);
        let node = &self.node;
        let no_bucket = || {
            format!(
                "node {node} was told the bucket {bucket:?} doesn't exist at {endpoint}; create it, or fix the sink URL"
            )
        };
        let denied = || {
            format!(
                "node {node} was denied access to {} at {endpoint} ({detail}); check the keys in the node credential {credential:?} (set them again with: gatehouse node credential set {credential}) and the bucket's policy",
                self.name
            )
        };
        let message = match error {
            object_store::Error::NotFound { .. }
                if detail.contains("NoSuchBucket") || detail.contains("bucket") =>
            {
                no_bucket()
            }
            object_store::Error::NotFound { .. } => {
                format!(
                    "node {node} writing {key} to {} at {endpoint} was told the bucket {bucket:?} or the upload wasn't found ({detail})",
                    self.name
                )
            }
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                denied()
            }
            _ if detail.contains("NoSuchBucket") => no_bucket(),
            _ if detail.contains("AccessDenied")
                || detail.contains("InvalidAccessKeyId")
                || detail.contains("SignatureDoesNotMatch") =>
            {
                denied()
            }
            // rustls: "invalid peer certificate: UnknownIssuer" (or NotValidForName, Expired, …).
            _ if detail.contains("UnknownIssuer") => format!(
                "the S3 endpoint {endpoint} presented a certificate that is not trusted: no CA node {node} trusts signed it ({detail}); set the sink's ca_file to the PEM file of the CA that did (at the same path on every node), or add that CA to the nodes' system roots"
            ),
            _ if detail.contains("certificate") => format!(
                "the S3 endpoint {endpoint} presented a certificate node {node} can't accept ({detail}); check that the endpoint URL names the host the certificate is for, and that the certificate is current"
            ),
            _ if detail.contains("error sending request")
                || detail.contains("onnect")
                || detail.contains("dns") =>
            {
                format!(
                    "node {node} can't reach the S3 endpoint {endpoint} of {} ({detail}); check the endpoint URL, that the server runs, and the firewall between them",
                    self.name
                )
            }
            _ => format!("node {node} failed to write {key} to {} at {endpoint}: {detail}", self.name),
        };
        TransferError::Sink(message)
    }
}

/// The distinct folders the keys are in, under a folder sink's root.
fn folders(root: &Path, keys: &[String]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        keys.iter().filter_map(|k| root.join(k).parent().map(Path::to_owned)).collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// An error with its sources, one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    // A server's error body (S3's XML) comes with line breaks; a run's error is one line.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn object_path(key: &str) -> Result<ObjectPath, TransferError> {
    ObjectPath::parse(key).map_err(|e| TransferError::Sink(format!("{key:?} can't be an object key: {e}")))
}

/// A hex SHA-256 as its 32 bytes.
fn digest_bytes(hex: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

fn sha256_attributes(sha256: &str) -> Attributes {
    Attributes::from_iter([(Attribute::Metadata(SHA256_KEY.into()), AttributeValue::from(sha256.to_owned()))])
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TransferError::Sink(format!("a file operation stopped: {e}")))?
}

fn folder_error(path: &Path, error: &std::io::Error) -> TransferError {
    let hint = match error.raw_os_error() {
        Some(28) => "; the sink's disk is full: free space there or copy elsewhere, then run the job again",
        Some(13) => "; the node's user may not write there: check the folder's permissions",
        Some(30) => "; the sink's file system is read-only: mount it read-write or copy elsewhere",
        _ => "",
    };
    TransferError::Sink(format!("can't write {}: {error}{hint}", path.display()))
}

/// Writes `data` to a new staging file (not synced: [`Sink::commit`] does that); sentences
/// name `target`. The file, still open.
fn write_staging(
    staging: &Path,
    target: &Path,
    data: PutPayload,
    sha256: &str,
    folders: &Folders,
) -> Result<std::fs::File, TransferError> {
    let dir = staging.parent().unwrap_or(Path::new("/"));
    folders.ensure(dir).map_err(|e| folder_error(dir, &e))?;
    let create = || std::fs::OpenOptions::new().write(true).create_new(true).open(staging);
    let file = match create() {
        // Its folder went away since it was made: make it again.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            folders.forget(dir);
            folders.ensure(dir).map_err(|e| folder_error(dir, &e))?;
            create()
        }
        other => other,
    };
    let write = |mut file: std::fs::File| -> std::io::Result<std::fs::File> {
        for piece in pieces(&data) {
            file.write_all(piece)?;
        }
        // The buffers go back to the budget now, not after the disk's wait.
        drop(data);
        // Its write-back starts now: on Linux, DONTNEED starts writing the dirty pages back
        // without waiting for them (and drops pages already clean, which the sink won't
        // read), so the commit's fdatasync finds the data mostly on disk instead of starting
        // to write it. Only advice: where it isn't taken, the fdatasync does all of it.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        Ok(file)
    };
    match file.and_then(write) {
        Ok(file) => {
            set_sha256_of(&file, staging, sha256);
            Ok(file)
        }
        Err(e) => {
            let _ = std::fs::remove_file(staging);
            Err(folder_error(target, &e))
        }
    }
}

/// Moves a complete staging file to its final name: a hard link that fails if the name is
/// taken (create-only), or a rename over it (overwrite); then the staging name goes. The
/// folders are synced once per commit ([`Sink::commit`]), not once per file. `false` when
/// the name was taken.
fn publish(staging: &Path, target: &Path, overwrite: bool) -> Result<bool, TransferError> {
    let placed = if overwrite {
        std::fs::rename(staging, target).map(|()| true)
    } else {
        match std::fs::hard_link(staging, target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    };
    let placed = placed.map_err(|e| {
        let _ = std::fs::remove_file(staging);
        folder_error(target, &e)
    })?;
    // A rename took the staging name with it; a link (made or refused) leaves it.
    if !overwrite {
        std::fs::remove_file(staging).map_err(|e| folder_error(staging, &e))?;
    }
    Ok(placed)
}

/// Keeps the SHA-256 with the file where the file system allows extended attributes (with the
/// size and modification time it belongs to, so a file changed later isn't trusted); where it
/// doesn't, [`file_sha256`] computes it again when it is needed.
fn set_sha256_of(file: &std::fs::File, path: &Path, sha256: &str) {
    use xattr::FileExt as _;
    let Ok(meta) = file.metadata() else { return };
    let value = format!("{sha256}:{}:{}", meta.len(), super::folder::modified_ms(&meta));
    if let Err(e) = file.set_xattr(SHA256_XATTR, value.as_bytes()) {
        tracing::debug!(path = %path.display(), "no extended attribute for the checksum: {e}");
    }
}

/// A file's SHA-256: the one stored with it when it is still current, else computed.
fn file_sha256(path: &Path) -> Result<String, TransferError> {
    let meta = std::fs::metadata(path).map_err(|e| folder_error(path, &e))?;
    let current = format!(":{}:{}", meta.len(), super::folder::modified_ms(&meta));
    if let Ok(Some(stored)) = xattr::get(path, SHA256_XATTR)
        && let Ok(stored) = String::from_utf8(stored)
        && let Some(sha256) = stored.strip_suffix(&current)
        && sha256.len() == 64
    {
        return Ok(sha256.to_owned());
    }
    let mut file = std::fs::File::open(path).map_err(|e| folder_error(path, &e))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| folder_error(path, &e))?;
    Ok(crate::encoding::hex(&hasher.finalize()))
}

/// Aborts an S3 upload until the server no longer lists it. A part whose request was still
/// being stored when the abort came can bring the upload back (AWS says to abort again once
/// such parts are in, and check); a server that can't list uploads gets one abort.
async fn abort_s3(
    store: &AmazonS3,
    calls: &super::s3calls::S3Calls,
    path: &ObjectPath,
    key: &str,
    upload_id: &str,
) -> Result<(), String> {
    let mut wait = Duration::from_millis(100);
    for _ in 0..ABORT_TRIES {
        store.abort_multipart(path, &upload_id.to_owned()).await.map_err(|e| e.to_string())?;
        // Time for a part the server was still storing to land, and bring the upload back.
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
        match calls.open_uploads(key).await {
            Ok(open) if !open.iter().any(|id| id == upload_id) => return Ok(()),
            Ok(_) => tracing::info!(%key, "an aborted upload came back with a late part; aborting it again"),
            Err(e) => {
                tracing::warn!(%key, "can't list the uploads to check an abort: {e}");
                return Ok(());
            }
        }
    }
    Err(format!("the upload {upload_id} is still listed after {ABORT_TRIES} aborts"))
}
