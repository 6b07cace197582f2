//! Group commit for SQLite: one writer connection, and the write
//! transactions waiting for it at one moment committed together.
//!
//! With `synchronous = FULL` every commit waits for the disk (about 1 ms
//! here), so one commit per sign-in step would cap the server near 1,000
//! steps per second. Instead each [`WriteTx`](crate::WriteTx) is a
//! SAVEPOINT inside one open group transaction on the writer connection:
//!
//! ```text
//!   step A: lock ─ SAVEPOINT ─ statements ─ RELEASE ─ unlock ─ lock again ─┐
//!   step B:   (queued) lock ─ SAVEPOINT ─ … ─ RELEASE ─ unlock ─ lock again ─┤
//!   step C:     (queued) lock ─ SAVEPOINT ─ CAS fails ─ ROLLBACK TO ─ unlock  │
//!   A, first to come back: COMMIT (A and B durable) ─ answers ────────────────┘ B sees it done
//! ```
//! The lock is a fair (FIFO) mutex, so a step that released its savepoint
//! queues behind every step already waiting; the first to come back commits
//! all of them at once, and each is answered only after that commit. A step
//! that fails or is abandoned rolls back to its own savepoint and leaves the
//! others alone. Steps run one at a time in lock order, so each reads the
//! audit head its predecessor left and the chain stays in order. Waiting for
//! the lock is bounded like SQLite's busy_timeout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{Result, StoreError};

/// How long a step waits for the writer (SQLite's busy_timeout is the same).
const WAIT: Duration = Duration::from_secs(10);

/// Failed groups remembered for the steps still waiting to hear.
const FAILED_KEPT: usize = 64;

pub(crate) struct GroupWriter {
    conn: Arc<Mutex<Writer>>,
}

pub(crate) struct Writer {
    conn: AnyConnection,
    /// A group transaction is open (BEGIN IMMEDIATE: SQLite's write lock held).
    in_tx: bool,
    /// Released steps in the open group await its commit.
    dirty: bool,
    /// A step's savepoint was left open (the step failed or was dropped).
    abandoned: bool,
    /// Number of the open (or next) group.
    group: u64,
    /// Highest group committed.
    committed: u64,
    failed: VecDeque<(u64, String)>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupWriter(..)")
    }
}

fn busy() -> StoreError {
    StoreError::Db(sqlx::Error::PoolTimedOut)
}

impl GroupWriter {
    pub(crate) fn new(conn: AnyConnection) -> Self {
        Self {
            conn: Arc::new(Mutex::new(Writer {
                conn,
                in_tx: false,
                dirty: false,
                abandoned: false,
                group: 1,
                committed: 0,
                failed: VecDeque::new(),
            })),
        }
    }

    async fn lock(&self) -> Result<OwnedMutexGuard<Writer>> {
        tokio::time::timeout(WAIT, self.conn.clone().lock_owned())
            .await
            .map_err(|_| busy())
    }

    /// Open a step: the writer, inside the group transaction, at a savepoint.
    pub(crate) async fn begin(&self) -> Result<GroupStep> {
        let mut w = self.lock().await?;
        w.tidy().await;
        if !w.in_tx {
            w.conn.execute("BEGIN IMMEDIATE").await?;
            w.in_tx = true;
        }
        w.conn.execute("SAVEPOINT step").await?;
        w.abandoned = true; // until released
        Ok(GroupStep {
            writer: Some(w),
            conn: self.conn.clone(),
        })
    }

    /// Run `sql` on the writer between groups (the WAL checkpoint): the
    /// open group is committed first, which only makes its steps durable
    /// sooner, and no step can start until `sql` is done.
    pub(crate) async fn between_groups(&self, sql: &str) -> Result<()> {
        let mut w = self.lock().await?;
        w.tidy().await;
        w.commit_group().await;
        w.conn.execute(sql).await?;
        Ok(())
    }
}

impl Writer {
    /// Undo an abandoned step; end an open group that holds nothing.
    async fn tidy(&mut self) {
        if self.abandoned {
            self.abandoned = false;
            if let Err(e) = self.conn.execute("ROLLBACK TO step; RELEASE step").await {
                // SQLite rolled the whole transaction back (an I/O error):
                // the released steps in it are lost, and told so.
                tracing::warn!(error = %e, "rolling back a step failed; abandoning its group");
                let _ = self.conn.execute("ROLLBACK").await;
                self.end_group(Err(e.to_string()));
                return;
            }
        }
        if self.in_tx && !self.dirty {
            if self.conn.execute("ROLLBACK").await.is_err() {
                tracing::warn!("ending an empty group failed");
            }
            self.in_tx = false;
        }
    }

    async fn commit_group(&mut self) {
        if !self.in_tx {
            return;
        }
        let r = self.conn.execute("COMMIT").await;
        if let Err(e) = &r {
            tracing::warn!(error = %e, "group commit failed");
            let _ = self.conn.execute("ROLLBACK").await;
        }
        self.end_group(r.map(|_| ()).map_err(|e| e.to_string()));
    }

    fn end_group(&mut self, outcome: std::result::Result<(), String>) {
        match outcome {
            Ok(()) => self.committed = self.group,
            Err(e) => {
                if self.failed.len() == FAILED_KEPT {
                    self.failed.pop_front();
                }
                self.failed.push_back((self.group, e));
            }
        }
        self.group += 1;
        self.in_tx = false;
        self.dirty = false;
    }

    /// What became of group `g`, if it has ended.
    fn outcome(&self, g: u64) -> Option<Result<()>> {
        if let Some((_, e)) = self.failed.iter().find(|(n, _)| *n == g) {
            return Some(Err(StoreError::Db(sqlx::Error::Protocol(format!(
                "the group commit failed: {e}"
            )))));
        }
        (self.committed >= g).then_some(Ok(()))
    }
}

/// One write transaction on the group writer (holds the writer until released).
pub(crate) struct GroupStep {
    writer: Option<OwnedMutexGuard<Writer>>,
    conn: Arc<Mutex<Writer>>,
}

impl GroupStep {
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.writer.as_mut().expect("an open step holds the writer").conn
    }

    /// Release the savepoint, let the steps queued behind run, then make
    /// the group durable (or learn that another step did). Returns only
    /// after the commit that includes this step.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let mut w = self.writer.take().expect("an open step holds the writer");
        if let Err(e) = w.conn.execute("RELEASE step").await {
            self.writer = Some(w); // dropped: rolled back by the next user
            return Err(e.into());
        }
        w.abandoned = false;
        w.dirty = true;
        let group = w.group;
        drop(w);
        let mut waiting = Waiting {
            conn: Some(self.conn.clone()),
            group,
        };
        let r = waiting.finish().await;
        waiting.conn = None;
        r
    }
}

impl Drop for GroupStep {
    /// An abandoned step: roll back to its savepoint now, so the writer's
    /// transaction does not stay open (and SQLite locked) until the next step.
    fn drop(&mut self) {
        if let Some(mut w) = self.writer.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { w.tidy().await });
            }
        }
    }
}

/// A released step waiting for its group's commit. If the waiting caller
/// goes away (a client disconnects), the commit still happens.
struct Waiting {
    conn: Option<Arc<Mutex<Writer>>>,
    group: u64,
}

impl Waiting {
    async fn finish(&mut self) -> Result<()> {
        let conn = self.conn.clone().expect("set until finished");
        finish(conn, self.group).await
    }
}

async fn finish(conn: Arc<Mutex<Writer>>, group: u64) -> Result<()> {
    let mut w = tokio::time::timeout(WAIT, conn.lock_owned())
        .await
        .map_err(|_| busy())?;
    if let Some(r) = w.outcome(group) {
        return r;
    }
    // Still open: this step is the first of its group back, so it commits
    // every step released into the group meanwhile.
    w.tidy().await;
    w.commit_group().await;
    w.outcome(group).unwrap_or_else(|| Err(busy()))
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let group = self.group;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = finish(conn, group).await;
                });
            }
        }
    }
}
