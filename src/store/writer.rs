//! Group commit: one thread owns the [`Store`] and commits everything queued
//! at a given moment in one transaction (one fsync per group).
//!
//! Submitters block on [`WriterHandle::submit`] until their items are durable
//! (or the commit failed). While one group commits, new submissions pile up
//! in the channel and form the next group, so the group size grows with load
//! and the fsync cost is shared.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use super::{BatchOutcome, IncomingItem, Store, StoreError};

/// Upper bound on the items of one group transaction (a group stops
/// draining the channel once it holds this many).
pub const MAX_GROUP_ITEMS: usize = 50_000;

type Reply = Sender<Result<BatchOutcome, StoreError>>;

enum Msg {
    Submit {
        items: Vec<IncomingItem>,
        reply: Reply,
    },
    Call(Box<dyn FnOnce(&mut Store) + Send>),
    Shutdown,
}

#[derive(Default)]
struct Counters {
    submissions: AtomicU64,
    transactions: AtomicU64,
    largest_group: AtomicU64,
}

/// Counters of a [`Writer`] since it was spawned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Submissions answered (committed or failed).
    pub submissions: u64,
    /// Group transactions committed (each one fsync).
    pub transactions: u64,
    /// Most submissions committed in a single transaction.
    pub largest_group: u64,
}

/// Cloneable, `Send` handle to submit work to a [`Writer`].
#[derive(Clone)]
pub struct WriterHandle {
    tx: Sender<Msg>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl WriterHandle {
    /// Commits `items` (see [`Store::enqueue_batch`]) as part of the next
    /// group transaction and blocks until it is durable.
    ///
    /// If a group fails, each of its submissions is retried alone, so one
    /// poisonous submission cannot fail its neighbours.
    ///
    /// # Errors
    /// The commit error ([`StoreError::DiskFull`] → answer HTTP 503, …):
    /// nothing of `items` was committed. [`StoreError::WriterClosed`] if the
    /// writer has shut down.
    pub fn submit(&self, items: Vec<IncomingItem>) -> Result<BatchOutcome, StoreError> {
        self.submit_nowait(items)?.wait()
    }

    /// Like [`WriterHandle::submit`] but returns as soon as `items` are
    /// queued for the next group commit; [`PendingCommit::wait`] blocks until
    /// they are durable. Lets a producer prepare its next batch while this
    /// one commits. Submissions are committed in the order they are queued.
    ///
    /// # Errors
    /// [`StoreError::WriterClosed`] if the writer has shut down.
    pub fn submit_nowait(&self, items: Vec<IncomingItem>) -> Result<PendingCommit, StoreError> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Msg::Submit { items, reply })
            .map_err(|_| StoreError::WriterClosed)?;
        Ok(PendingCommit { rx })
    }

    /// Runs `f` on the writer thread with exclusive access to the [`Store`]
    /// (between group commits, in submission order) and returns its result.
    /// Use it for dequeue/ack, audience CRUD and queries while a [`Writer`]
    /// owns the store.
    ///
    /// # Errors
    /// Whatever `f` returns; [`StoreError::WriterClosed`] if the writer has
    /// shut down or `f` panicked.
    pub fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = mpsc::channel();
        let job = move |store: &mut Store| {
            let _ = reply.send(f(store));
        };
        self.tx
            .send(Msg::Call(Box::new(job)))
            .map_err(|_| StoreError::WriterClosed)?;
        rx.recv().map_err(|_| StoreError::WriterClosed)?
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            submissions: self.counters.submissions.load(Ordering::Relaxed),
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            largest_group: self.counters.largest_group.load(Ordering::Relaxed),
        }
    }
}

/// A submission queued with [`WriterHandle::submit_nowait`]. Dropping it
/// does not cancel the commit; it only discards the answer.
#[derive(Debug)]
pub struct PendingCommit {
    rx: Receiver<Result<BatchOutcome, StoreError>>,
}

impl PendingCommit {
    /// Blocks until the submission is committed (or failed).
    ///
    /// # Errors
    /// As [`WriterHandle::submit`].
    pub fn wait(self) -> Result<BatchOutcome, StoreError> {
        self.rx.recv().map_err(|_| StoreError::WriterClosed)?
    }
}

/// The writer thread. Dropping it shuts the thread down after the work
/// already queued; [`Writer::shutdown`] also gives the [`Store`] back.
pub struct Writer {
    handle: WriterHandle,
    thread: Option<JoinHandle<Store>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stats", &self.handle.stats())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread (named `amc-sync-store`), moving `store` into it.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the thread cannot be spawned.
    pub fn spawn(store: Store) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let path = store.path().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("amc-sync-store".into())
            .spawn(move || run(store, &rx, &c))
            .map_err(|e| StoreError::Io {
                path,
                source: Arc::new(e),
            })?;
        Ok(Writer {
            handle: WriterHandle { tx, counters },
            thread: Some(thread),
        })
    }

    /// A new handle for submitters.
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        self.handle.stats()
    }

    /// Finishes the work queued before this call, stops the thread and
    /// returns the store. Later submissions get [`StoreError::WriterClosed`].
    ///
    /// # Errors
    /// [`StoreError::WriterClosed`] if the thread panicked (the store is lost;
    /// reopen the file).
    pub fn shutdown(mut self) -> Result<Store, StoreError> {
        self.stop().ok_or(StoreError::WriterClosed)
    }

    fn stop(&mut self) -> Option<Store> {
        let thread = self.thread.take()?;
        let _ = self.handle.tx.send(Msg::Shutdown);
        thread.join().ok()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn run(mut store: Store, rx: &Receiver<Msg>, counters: &Counters) -> Store {
    while let Ok(first) = rx.recv() {
        let mut msgs = vec![first];
        let mut items = 0;
        while items < MAX_GROUP_ITEMS {
            match rx.try_recv() {
                Ok(m) => {
                    if let Msg::Submit { items: it, .. } = &m {
                        items += it.len();
                    }
                    msgs.push(m);
                }
                Err(_) => break,
            }
        }
        let mut group: Vec<(Vec<IncomingItem>, Reply)> = Vec::new();
        let mut stop = false;
        for m in msgs {
            match m {
                Msg::Submit { items, reply } => group.push((items, reply)),
                Msg::Call(f) => {
                    flush(&mut store, &mut group, counters);
                    // A panicking job drops its reply sender: its caller gets
                    // WriterClosed, the writer keeps serving others.
                    let _ = catch_unwind(AssertUnwindSafe(|| f(&mut store)));
                }
                Msg::Shutdown => {
                    // Anything queued after the shutdown request is dropped;
                    // its submitters see WriterClosed.
                    stop = true;
                    break;
                }
            }
        }
        flush(&mut store, &mut group, counters);
        if stop {
            break;
        }
    }
    store
}

fn flush(store: &mut Store, group: &mut Vec<(Vec<IncomingItem>, Reply)>, counters: &Counters) {
    if group.is_empty() {
        return;
    }
    let batch = std::mem::take(group);
    let refs: Vec<&[IncomingItem]> = batch.iter().map(|(items, _)| items.as_slice()).collect();
    let n = batch.len() as u64;
    let results: Vec<Result<BatchOutcome, StoreError>> = match store.commit_group(&refs) {
        Ok(outs) => {
            counters.largest_group.fetch_max(n, Ordering::Relaxed);
            outs.into_iter().map(Ok).collect()
        }
        Err(e) if batch.len() == 1 => vec![Err(e)],
        // Isolate the failing submission(s): retry each on its own.
        Err(_) => refs
            .iter()
            .map(|items| {
                store
                    .commit_group(&[items])
                    .map(|mut o| o.pop().unwrap_or_default())
            })
            .collect(),
    };
    // Counters first, so a submitter that got its answer sees itself counted.
    counters.submissions.fetch_add(n, Ordering::Relaxed);
    counters
        .transactions
        .store(store.commit_count(), Ordering::Relaxed);
    for ((_, reply), r) in batch.iter().zip(results) {
        let _ = reply.send(r);
    }
}
