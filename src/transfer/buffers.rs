//! The node-wide copy budget: a fixed set of 1 MiB buffers that every copy on the node reads
//! into, taken before reading and given back when the bytes have been sent (a buffer handed to
//! the HTTP client as [`Bytes`] comes back when the client drops it). The buffers are made
//! once and reused, so a node's copy memory is the budget, not whatever the allocator keeps
//! of a stream of freed 8 MiB blocks.

use super::TransferError;
use bytes::Bytes;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The size of one buffer.
pub const CHUNK: usize = 1 << 20;
/// Buffers of every copy on this node together (32 MiB).
pub const BUDGET_CHUNKS: usize = 32;

struct Pool {
    permits: Arc<Semaphore>,
    /// Buffers given back, for the next reader. std Mutex: held only to push or pop.
    free: Mutex<Vec<Box<[u8]>>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        permits: Arc::new(Semaphore::new(BUDGET_CHUNKS)),
        free: Mutex::new(Vec::new()),
    })
}

/// One buffer of the budget; `len` bytes of it hold data. Goes back to the pool when dropped.
pub struct Chunk {
    data: Box<[u8]>,
    len: usize,
    _permit: OwnedSemaphorePermit,
}

impl Chunk {
    /// The whole buffer, to read into; [`Chunk::set_len`] says how much was filled.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.data
    }

    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.data.len());
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The filled bytes as [`Bytes`] without a copy; the buffer returns to the pool when the
    /// last clone of them is dropped.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if data.len() == CHUNK
            && let Ok(mut free) = pool().free.lock()
        {
            free.push(data);
        }
    }
}

/// [`take`], given up when `cancel` fires: the buffers may be held by uploads of the same
/// cancelled job that wait for bandwidth the hub no longer grants, and are let go only when
/// their run stops.
pub async fn take_unless(
    bytes: u64,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Vec<Chunk>, TransferError> {
    tokio::select! {
        chunks = take(bytes) => chunks,
        () = cancel.cancelled() => Err(TransferError::Cancelled),
    }
}

/// Waits for enough buffers to hold `bytes` (at most the whole budget) and takes them.
pub async fn take(bytes: u64) -> Result<Vec<Chunk>, TransferError> {
    let count = usize::try_from(bytes.div_ceil(CHUNK as u64)).unwrap_or(BUDGET_CHUNKS).min(BUDGET_CHUNKS);
    if count == 0 {
        return Ok(Vec::new());
    }
    let pool = pool();
    let count_u32 = u32::try_from(count).unwrap_or(1);
    let mut permits = Arc::clone(&pool.permits)
        .acquire_many_owned(count_u32)
        .await
        .map_err(|_| TransferError::Source("the copy's memory budget is closed".into()))?;
    let fresh = || {
        let reused = pool.free.lock().ok().and_then(|mut free| free.pop());
        reused.unwrap_or_else(|| vec![0; CHUNK].into_boxed_slice())
    };
    let mut chunks = Vec::with_capacity(count);
    for _ in 1..count {
        let Some(permit) = permits.split(1) else { break };
        chunks.push(Chunk { data: fresh(), len: 0, _permit: permit });
    }
    chunks.push(Chunk { data: fresh(), len: 0, _permit: permits });
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_come_back_to_the_pool_when_their_bytes_are_dropped() {
        let before = pool().permits.available_permits();
        let mut chunks = take(3 * CHUNK as u64 - 5).await.expect("buffers");
        assert_eq!(chunks.len(), 3);
        assert_eq!(pool().permits.available_permits(), before - 3);
        chunks[0].space()[..2].copy_from_slice(b"hi");
        chunks[0].set_len(2);
        let bytes = chunks.remove(0).into_bytes();
        assert_eq!(&bytes[..], b"hi");
        drop(chunks);
        assert_eq!(pool().permits.available_permits(), before - 1, "the Bytes still holds one");
        drop(bytes);
        assert_eq!(pool().permits.available_permits(), before);
        assert!(take(0).await.expect("none").is_empty());
        assert_eq!(take(1 << 40).await.expect("capped").len(), BUDGET_CHUNKS);
    }
}
