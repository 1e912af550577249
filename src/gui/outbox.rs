//! What drawing asks for. Pages push typed [`Request`]s here while they draw (they never send
//! work themselves); [`super::ConfigManager::logic`] drains them, records what is pending
//! (connection tests, a jobs fetch) and hands them to the service thread, whose answers it
//! routes to the page that asked.

use super::service::Request;
use std::cell::RefCell;

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
