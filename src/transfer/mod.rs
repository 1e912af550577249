//! Copy activities: the seam the worker calls. A copy's first run lists its source and splits
//! it into parts ([`plan`]); each part's run moves its files or rows to the sink ([`execute`])
//! so that nothing appears under a final name until it is complete, resuming from the
//! checkpoint an earlier attempt left. Knows nothing of the hub or the peer channel: it gets
//! credentials, a [`Reporter`] for progress and checkpoints, and a cancel token.
//!
//! Parts: [`spec`] checks what a job asks for, [`folder`] lists folders and groups files into
//! parts, [`sql`] reads query results, [`sink`] writes objects exactly once, [`copy`] and
//! [`export`] run one part of each kind ([`stream`] a SQL part into S3), [`checkpoint`] is what an attempt leaves for the next,
//! [`bandwidth`] paces what a node sends, [`buffers`] is the node's copy memory, [`digest`]
//! keeps S3 requests from hashing again what a copy hashed, [`s3calls`] makes the S3 calls
//! `object_store` doesn't.

pub mod bandwidth;
mod buffers;
pub mod checkpoint;
mod copy;
mod digest;
mod export;
pub mod folder;
mod s3calls;
pub mod sink;
pub mod spec;
pub mod sql;
mod stream;
pub mod xml;

pub use checkpoint::Checkpoint;

use crate::protocol::{Activity, Part, TransferProgress};
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// What a copy run needs from the node it runs on.
pub struct Context<'a, R> {
    /// The node's name, for sentences such as "node n2 can't see /srv/exports".
    pub node: &'a str,
    /// The run and attempt, which name this attempt's staging files.
    pub run: &'a str,
    pub attempt: u32,
    /// Looks up a node credential by name.
    pub credentials: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
    pub reporter: &'a R,
    pub cancel: CancellationToken,
    /// This node's share of the gateway's bandwidth limit, shared by all its copies.
    pub bandwidth: bandwidth::Bandwidth,
    /// What an earlier attempt of this run committed.
    pub checkpoint: Checkpoint,
}

/// Where a copy run reports to: its progress now and then, and checkpoints that must be taken
/// before it goes on (the hub answering is the proof the attempt is still current).
pub trait Reporter: Send + Sync {
    /// The latest progress; may be dropped or merged with the next one.
    fn progress(&self, progress: TransferProgress);
    /// Records `checkpoint` with the run; `Err` when the attempt isn't the current one any more
    /// (then nothing more may be committed).
    fn checkpoint(
        &self,
        progress: TransferProgress,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), TransferError>> + Send;
}

/// How a copy run ended well.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The source was listed: these parts become runs; `summary` is the listing run's result.
    Split { parts: Vec<Part>, summary: serde_json::Value },
    /// The part was copied; its result.
    Done(serde_json::Value),
}

/// Why a copy run failed. Every message names the file, object or server and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(
        "node {node} holds no credential named {name:?}; set it on a node with: gatehouse node credential set {name}"
    )]
    MissingCredential { node: String, name: String },
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Sink(String),
    #[error(transparent)]
    Sql(#[from] sql::SqlError),
    /// The attempt was superseded (its node was thought lost): it stops without a word.
    #[error("this attempt is not the run's current one any more; another attempt carries on")]
    Superseded,
    #[error("the run was cancelled")]
    Cancelled,
}

/// Lists a copy's source and splits it into parts (the first run of a copy activity).
pub async fn plan<R: Reporter>(activity: &Activity, ctx: &Context<'_, R>) -> Result<Outcome, TransferError> {
    let Activity::Copy { source, sink, .. } = activity else {
        return Err(TransferError::Source("only copy activities are planned".into()));
    };
    let (source, _) = spec::check(source, sink)?;
    match source {
        spec::Source::Folder { root, include, exclude } => {
            let listing = folder::list(ctx.node, &root, &include, &exclude).await?;
            let summary = serde_json::json!({
                "files": listing.len(),
                "bytes": listing.iter().map(|f| f.size).sum::<u64>(),
            });
            let parts = folder::group(listing).into_iter().map(|files| Part::Files { files }).collect();
            Ok(Outcome::Split { parts, summary })
        }
        spec::Source::Sql { database, query, split, .. } => {
            let parts = match split {
                None => vec![Part::Rows { index: 0, lower: None, upper: None, nulls: true }],
                Some(split) => {
                    let database = export::open(&database, ctx)?;
                    let bounds = sql::bounds(&database, &query, &split.column).await?;
                    export::ranges(bounds, split.partitions)
                }
            };
            let summary = serde_json::json!({ "partitions": parts.len() });
            Ok(Outcome::Split { parts, summary })
        }
    }
}

/// Copies one part of a copy activity to its sink.
pub async fn execute<R: Reporter>(
    activity: &Activity,
    part: &Part,
    ctx: &Context<'_, R>,
) -> Result<Outcome, TransferError> {
    let Activity::Copy { source, sink, overwrite } = activity else {
        return Err(TransferError::Source("only copy activities have parts".into()));
    };
    let (source, sink) = spec::check(source, sink)?;
    let sink_credential = match &sink {
        spec::Sink::S3 { credential: name, .. } => Some(credential(ctx, name)?),
        spec::Sink::File { .. } => None,
    };
    let sink = sink::Sink::open(&sink, sink_credential.as_deref(), ctx.node, ctx.run, ctx.attempt)?;
    match (source, part) {
        (spec::Source::Folder { root, .. }, Part::Files { files }) => {
            copy::files(&root, files, &sink, *overwrite, ctx).await.map(Outcome::Done)
        }
        (spec::Source::Sql { database, query, format, split }, Part::Rows { index, lower, upper, nulls }) => {
            let range =
                split.map(|s| sql::Range { column: s.column, lower: *lower, upper: *upper, nulls: *nulls });
            let database = export::open(&database, ctx)?;
            export::rows(&database, &query, format, range.as_ref(), *index, &sink, *overwrite, ctx)
                .await
                .map(Outcome::Done)
        }
        _ => Err(TransferError::Source("this part doesn't belong to this activity's source".into())),
    }
}

/// A credential's value, or the sentence that says which node lacks it.
fn credential<R>(ctx: &Context<'_, R>, name: &str) -> Result<String, TransferError> {
    (ctx.credentials)(name)
        .ok_or_else(|| TransferError::MissingCredential { node: ctx.node.to_owned(), name: name.to_owned() })
}
