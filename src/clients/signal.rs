//! `pg_cancel_backend()` and `pg_terminate_backend()` for pgsplit's own process ids. A
//! client's BackendKeyData carries pgsplit's number for it, not a server's, so these
//! functions called with it would reach no backend. pgsplit's numbers lie above every
//! process id Linux can give (`PID_MAX_LIMIT`), so they are never a server's: a call with
//! one is answered by pgsplit, which cancels that client's statement or ends its session,
//! exactly as PostgreSQL would for a backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Linux's largest `pid_max` (2^22 on 64-bit systems): every server process id is below it.
pub const PID_MAX_LIMIT: i32 = 1 << 22;

/// Whether `value` is one of pgsplit's client process ids (never a server's).
pub fn is_client_pid(value: i64) -> bool {
    (i64::from(PID_MAX_LIMIT)..=i64::from(i32::MAX)).contains(&value)
}

/// The `n`th client's process id: at or above `PID_MAX_LIMIT`, wrapping within `i32`.
pub fn client_pid(n: u32) -> i32 {
    let span = (i32::MAX - PID_MAX_LIMIT) as u32 + 1;
    PID_MAX_LIMIT + (n % span) as i32
}

/// What is asked of a client's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `pg_cancel_backend`: cancel its running statement.
    Cancel,
    /// `pg_terminate_backend`: end its session.
    Terminate,
}

impl Signal {
    /// The function's name, which is also its result column's.
    pub fn function(self) -> &'static str {
        match self {
            Signal::Cancel => "pg_cancel_backend",
            Signal::Terminate => "pg_terminate_backend",
        }
    }
}

/// How a signal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signaled {
    /// Sent (the function returns true).
    Sent,
    /// No client has that process id (PostgreSQL warns and returns false).
    NoSuchClient,
    /// The caller may not signal it (42501).
    NotAllowed,
}

/// Whether a client logged in as `caller` may signal one logged in as `target`. pgsplit
/// knows its users, not the server's role memberships: a client may signal the clients
/// of its own user, as a role may signal its own backends. Pure.
pub fn allowed(caller: &str, target: &str) -> bool {
    caller == target
}

/// A request to end a session, set by another client and awaited by the session.
#[derive(Debug, Default)]
pub(super) struct Termination {
    requested: AtomicBool,
    waker: AtomicWaker,
}

impl Termination {
    pub(super) fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the session is to end. The session's task waker is registered once
    /// (`registered`, the session's own flag): a task's waker wakes it whichever future of
    /// it polls, so later polls (several a transaction) cost one atomic load.
    pub(super) fn poll(&self, cx: &mut Context<'_>, registered: &AtomicBool) -> Poll<()> {
        if self.requested.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !registered.load(Ordering::Relaxed) {
            self.waker.register(cx.waker());
            registered.store(true, Ordering::Relaxed);
            if self.requested.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_pids_are_never_server_pids() {
        assert_eq!(client_pid(0), PID_MAX_LIMIT);
        assert_eq!(client_pid(1), PID_MAX_LIMIT + 1);
        // Wrapping stays in range.
        let last = (i32::MAX - PID_MAX_LIMIT) as u32;
        assert_eq!(client_pid(last), i32::MAX);
        assert_eq!(client_pid(last + 1), PID_MAX_LIMIT);
        assert_eq!(client_pid(u32::MAX), client_pid(u32::MAX % (last + 1)));
        for n in [0, 1, 7, last, last + 1, u32::MAX] {
            assert!(is_client_pid(i64::from(client_pid(n))));
        }
        // A real backend's pid (below pid_max) is not one; neither is anything outside int4.
        for v in [1, 4_194_303, -5, i64::from(i32::MAX) + 1] {
            assert!(!is_client_pid(v), "{v}");
        }
    }

    #[test]
    fn a_client_signals_the_clients_of_its_own_user() {
        assert!(allowed("app", "app"));
        assert!(!allowed("app", "admin"));
    }

    #[test]
    fn a_termination_wakes_its_session() {
        let t = Termination::default();
        let registered = AtomicBool::new(false);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(t.poll(&mut cx, &registered).is_pending());
        assert!(registered.load(Ordering::Relaxed));
        assert!(t.poll(&mut cx, &registered).is_pending());
        t.request();
        assert!(t.poll(&mut cx, &registered).is_ready());
    }
}
