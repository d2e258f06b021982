//! Locks (REMOTE.md §4): an object per running push or gc, written, then
//! checked against the others. Without conditional writes (not every
//! S3-compatible server refuses an overwrite), "write, then list" is what
//! makes the exclusion hold: of two processes that both wrote, at least one
//! sees the other and backs off.

use std::time::Duration;

use uuid::Uuid;

use super::{LockKind, Remote};
use crate::error::Error;

/// A lock this process holds; refreshed in the background until released.
pub(super) struct Held {
    rel: String,
    stop: tokio::sync::oneshot::Sender<()>,
    refresher: tokio::task::JoinHandle<()>,
}

fn kind_of(rel: &str) -> Option<LockKind> {
    let name = rel.rsplit('/').next()?;
    match name.split_once('-')?.0 {
        "push" => Some(LockKind::Push),
        "gc" => Some(LockKind::Gc),
        _ => None,
    }
}

impl Remote {
    /// Takes a lock of `kind`, or fails with [`Error::Remote`] naming the
    /// live lock that excludes it. A push waits for a running gc (a few
    /// tries, backing off up to about 30 s in all); a gc does not wait.
    pub(super) fn acquire(&self, kind: LockKind) -> Result<Held, Error> {
        let tries = if kind == LockKind::Push { 8 } else { 1 };
        let mut wait = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.try_acquire(kind) {
                Err(Error::Remote { detail, .. }) if attempt < tries && detail.starts_with("busy") => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(8));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_acquire(&self, kind: LockKind) -> Result<Held, Error> {
        let store = &self.store;
        let rel = format!("locks/{}-{}.json", kind.name(), Uuid::new_v4().hyphenated());
        let body = serde_json::json!({ "kind": kind, "pid": std::process::id() }).to_string().into_bytes();
        store.runtime.block_on(store.put(&rel, body.clone()))?;
        let locks = store.runtime.block_on(store.list("locks"))?;
        // The server's clock: our own lock was written just now.
        let now = locks.iter().find(|m| m.rel == rel).map_or_else(|| locks.iter().map(|m| m.modified).max().unwrap_or(0), |m| m.modified);
        let stale = i64::try_from(self.stale_after.as_secs()).unwrap_or(i64::MAX);
        for other in locks.iter().filter(|m| m.rel != rel && now - m.modified < stale) {
            // An unknown kind excludes everything: it may be a newer tool's.
            if kind_of(&other.rel).is_none_or(|k| kind.excludes(k)) {
                let _ = store.runtime.block_on(store.delete(&rel));
                let detail = format!(
                    "busy: {} holds the remote ({} s old); a {} cannot run at the same time; try again later",
                    other.rel,
                    now - other.modified,
                    kind.name()
                );
                return Err(Error::Remote { location: store.url.clone(), detail });
            }
        }
        let every = (self.stale_after / 3).max(Duration::from_millis(100));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let refresher = store.spawn_refresh(&rel, body, every, stopped);
        Ok(Held { rel, stop, refresher })
    }

    /// Releases a lock.
    /// Releases a lock: stops its refresher, waits until no rewrite is in
    /// flight, then deletes it.
    pub(super) fn release(&self, held: Held) -> Result<(), Error> {
        let _ = held.stop.send(());
        let _ = self.store.runtime.block_on(held.refresher);
        self.store.runtime.block_on(self.store.delete(&held.rel))
    }

    /// Locks no process has refreshed for longer than the stale time, other
    /// than `own`.
    pub(super) fn stale_locks(&self, own: &Held) -> Result<Vec<String>, Error> {
        let locks = self.store.runtime.block_on(self.store.list("locks"))?;
        let now = locks.iter().map(|m| m.modified).max().unwrap_or(0);
        let stale = i64::try_from(self.stale_after.as_secs()).unwrap_or(i64::MAX);
        Ok(locks.into_iter().filter(|m| m.rel != own.rel && now - m.modified >= stale).map(|m| m.rel).collect())
    }
}
