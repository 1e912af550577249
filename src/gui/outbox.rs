//! What drawing asks for. Pages push typed [`Request`]s here while they draw (they never send
//! work themselves); [`super::ConfigManager::logic`] drains them, records what is pending
//! (connection tests, a jobs fetch) and hands them to the service thread, whose answers it
//! routes to the page that asked. [`Answers`] is a page's own record of the operations it
//! sent: waiting, then answered.

use super::ops::{Op, OpKind};
use super::service::Request;
use std::cell::RefCell;
use std::collections::HashMap;

/// Requests pushed during a frame, sent by the next `logic()`. A `RefCell` because drawing
/// functions hold only `&` to it: the UI thread is the only one that touches it.
#[derive(Default)]
pub struct Outbox(RefCell<Vec<Request>>);

impl Outbox {
    /// Asks for `request` (sent at the start of the next frame).
    pub fn send(&self, request: Request) {
        self.0.borrow_mut().push(request);
    }

    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    /// Everything pushed since the last drain, oldest first.
    pub fn drain(&self) -> Vec<Request> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

/// Where an operation stands, as the section that sent it shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Sent; no answer yet.
    Waiting,
    /// The operation's sentence (`Err`: why nothing changed).
    Done(Result<String, String>),
}

/// Where each operation a page (or a section of it) sent stands, by kind: what is pending,
/// then the answer, until the next one.
#[derive(Debug, Default)]
pub struct Answers(HashMap<OpKind, Reply>);

impl Answers {
    /// Asks for `op` through `outbox` and marks its kind as waiting.
    pub(crate) fn send(&mut self, outbox: &Outbox, op: Op) {
        self.0.insert(op.kind(), Reply::Waiting);
        outbox.send(Request::Op(op));
    }

    pub(crate) fn waiting(&self, kind: OpKind) -> bool {
        self.0.get(&kind) == Some(&Reply::Waiting)
    }

    /// The last answer to a `kind` operation; `None` while it runs or if none was sent.
    pub fn answer(&self, kind: OpKind) -> Option<&Result<String, String>> {
        match self.0.get(&kind) {
            Some(Reply::Done(result)) => Some(result),
            _ => None,
        }
    }

    /// Whether a `kind` operation was ever sent (and its answer kept).
    pub fn contains(&self, kind: OpKind) -> bool {
        self.0.contains_key(&kind)
    }

    pub(crate) fn get(&self, kind: OpKind) -> Option<&Reply> {
        self.0.get(&kind)
    }

    pub(crate) fn done(&mut self, kind: OpKind, result: &Result<String, String>) {
        self.0.insert(kind, Reply::Done(result.clone()));
    }

    pub(crate) fn forget(&mut self, kind: OpKind) {
        self.0.remove(&kind);
    }
}
