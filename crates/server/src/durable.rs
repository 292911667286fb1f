//! The durable storage backend: every state, its value, version, lifetime and session
//! outcomes in one redb file, written by group commit.
//!
//! Policy (what "acknowledged" means with this backend): a change is submitted under
//! its state's lock, so changes reach the committer in the order the states applied
//! them, each with a ticket that only grows. The committer thread takes every change
//! waiting, writes them in one transaction and commits it with an fsync: updates that
//! arrive while a commit is in flight go together into the next one. Only then are
//! the updates of that commit broadcast and acknowledged (the sender's echo, `Applied`
//! in the clients, `update_state_value`): an acknowledged update is on disk. With
//! [`Durability::WriteBehind`] commits are acknowledged before their fsync, which runs
//! at least every given interval: a crash of the machine (not of the process) loses at
//! most that window.
//!
//! An update writes what it changed (its top-level keys and the version), never the
//! whole state. Session outcomes are written with the update (or failure) they
//! record, and trimmed to the last [`DEDUP_WINDOW`](state_sync_protocol::DEDUP_WINDOW) per session.
//!
//! A commit that fails (disk full, I/O error) leaves the store failed: the updates of
//! that commit and every later one fail with `storageFailed` and nothing more is
//! acknowledged, so nothing unsaved is ever acknowledged; the operator restarts the
//! server once the disk is fixed, and it reloads what was committed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use state_sync_protocol::JsonObject;
use tokio::sync::watch;

use crate::backend::{Backend, Change, Loaded, Release, Saving, StoreError, StoredOutcome};
use crate::session_log::SessionKey;

mod commit;

use commit::{Tell, commit_loop};

/// The file in the data directory.
pub(crate) const FILE_NAME: &str = "state-sync.redb";
/// The format of what this version writes; a store of a newer format is refused.
const FORMAT: u64 = 1;
/// Most changes written by one commit.
const MAX_BATCH: usize = 8192;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// State id → its record (version, lifetime, next key slot), as JSON.
const STATES: TableDefinition<'_, &str, &str> = TableDefinition::new("states");
/// (state id, key) → the key's slot, which keeps the order keys were written in.
const KEYS: TableDefinition<'_, (&str, &str), u64> = TableDefinition::new("keys");
/// (state id, slot) → (key, value as JSON text).
const ENTRIES: TableDefinition<'_, (&str, u64), (&str, &str)> = TableDefinition::new("entries");
/// (state id, client identifier, session, request id) → the outcome, as JSON.
const OUTCOMES: TableDefinition<'_, (&str, &str, &str, u64), &str> =
    TableDefinition::new("outcomes");

/// When a commit is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After its fsync (the default): an acknowledged update survives any crash.
    Synchronous,
    /// Before its fsync, which runs at least this often: a crash of the machine may
    /// lose the updates of that window (a crash of the process loses nothing).
    WriteBehind(Duration),
}

/// A durable store in a data directory, for [`Builder::storage`](crate::Builder::storage):
/// every state, with its value, version, ttl deadline and session outcomes, in one redb
/// file (`state-sync.redb`). See the module policy in the crate docs (`# Durability`).
///
/// ```no_run
/// use state_sync_server::{StateSyncer, Storage};
/// # fn main() -> Result<(), state_sync_server::Error> {
/// let syncer = StateSyncer::builder().storage(Storage::open("data")?).build();
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Storage {
    pub(crate) store: Arc<RedbStore>,
}

impl Storage {
    /// Opens (or creates) the store in `dir`; an update is acknowledged once saved
    /// ([`Durability::Synchronous`]).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) naming the path and the cause when
    /// the directory cannot be used: not writable, in use by another running server,
    /// a store of a newer format, a corrupt or truncated file.
    pub fn open(dir: impl AsRef<Path>) -> crate::Result<Storage> {
        Self::open_with(dir, Durability::Synchronous)
    }

    /// Opens the store in `dir` with the given [`Durability`].
    ///
    /// # Errors
    /// As [`Storage::open`].
    pub fn open_with(dir: impl AsRef<Path>, durability: Durability) -> crate::Result<Storage> {
        Ok(Storage {
            store: RedbStore::open(dir.as_ref(), durability)?,
        })
    }

    /// What the store has written since it was opened.
    pub fn stats(&self) -> StorageStats {
        let (commits, changes) = &*self.store.stats;
        StorageStats {
            commits: commits.load(Ordering::Relaxed),
            changes: changes.load(Ordering::Relaxed),
        }
    }
}

/// What a store has written since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageStats {
    /// Transactions committed.
    pub commits: u64,
    /// Changes written (a state's update, a session outcome, a creation, a removal);
    /// `changes / commits` is how many share a commit.
    pub changes: u64,
}

#[derive(Serialize, Deserialize)]
struct StateMeta {
    version: u64,
    created_ms: u64,
    expires_ms: Option<u64>,
    next_slot: u64,
}

/// The committed ticket, and whether the store failed.
#[derive(Debug, Clone, Copy, Default)]
struct Committed {
    ticket: u64,
    failed: bool,
}

type Job = (u64, Change, Option<Arc<dyn Release>>);

/// The redb store of a server.
pub(crate) struct RedbStore {
    path: PathBuf,
    /// `None` once closed: the file is released.
    db: Mutex<Option<Arc<Database>>>,
    queue: Mutex<Option<(u64, mpsc::Sender<Job>)>>,
    committed: watch::Receiver<Committed>,
    /// The same, for threads that wait without a runtime.
    committed_blocking: Arc<(Mutex<Committed>, std::sync::Condvar)>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Commits and changes written.
    stats: Arc<(AtomicU64, AtomicU64)>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`. Every way the directory can be unusable
    /// is an error naming the path and the cause.
    pub(crate) fn open(dir: &Path, durability: Durability) -> Result<Arc<Self>, StoreError> {
        let fail = |what: &str, cause: &dyn std::fmt::Display| {
            StoreError(format!("{what} {}: {cause}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the data directory", &e))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError(format!(
                "the data directory {} is in use by another running server",
                dir.display()
            )),
            other => StoreError(format!("cannot open the store {}: {other}", path.display())),
        })?;
        let txn = db.begin_write().map_err(|e| fail("cannot write to", &e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| fail("cannot read", &e))?;
            let format = meta
                .get("format")
                .map_err(|e| fail("cannot read", &e))?
                .map(|v| v.value());
            match format {
                Some(format) if format > FORMAT => {
                    return Err(StoreError(format!(
                        "the store {} has format {format}, newer than this server's ({FORMAT}): use a newer server",
                        path.display()
                    )));
                }
                Some(_) => {}
                None => {
                    meta.insert("format", FORMAT)
                        .map_err(|e| fail("cannot write to", &e))?;
                }
            }
            for result in [
                txn.open_table(STATES).map(drop),
                txn.open_table(KEYS).map(drop),
                txn.open_table(ENTRIES).map(drop),
                txn.open_table(OUTCOMES).map(drop),
            ] {
                result.map_err(|e| fail("cannot read", &e))?;
            }
        }
        txn.commit().map_err(|e| fail("cannot write to", &e))?;
        let db = Arc::new(db);
        let (sender, receiver) = mpsc::channel();
        let (committed_tx, committed) = watch::channel(Committed::default());
        let committed_blocking =
            Arc::new((Mutex::new(Committed::default()), std::sync::Condvar::new()));
        let stats = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let committer = {
            let db = Arc::clone(&db);
            let path = path.clone();
            let tell = Tell {
                watch: committed_tx,
                blocking: Arc::clone(&committed_blocking),
                stats: Arc::clone(&stats),
            };
            std::thread::Builder::new()
                .name("state-sync-commit".into())
                .spawn(move || commit_loop(&db, &path, &receiver, &tell, durability))
                .map_err(|e| fail("cannot start the committer for", &e))?
        };
        Ok(Arc::new(RedbStore {
            path,
            db: Mutex::new(Some(db)),
            queue: Mutex::new(Some((0, sender))),
            committed,
            committed_blocking,
            committer: Mutex::new(Some(committer)),
            stats,
        }))
    }

    /// Waits until `ticket` is durable.
    ///
    /// # Errors
    /// When the store failed (or closed) before it was.
    async fn wait_for(&self, ticket: u64) -> Result<(), StoreError> {
        let mut committed = self.committed.clone();
        let state = committed
            .wait_for(|c| c.ticket >= ticket || c.failed)
            .await
            .map_or(
                Committed {
                    ticket: 0,
                    failed: true,
                },
                |c| *c,
            );
        if state.ticket >= ticket {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    fn failure(&self) -> StoreError {
        StoreError(format!(
            "the store {} failed to commit; restart the server once the disk is fixed",
            self.path.display()
        ))
    }

    /// The ticket of the last change submitted.
    fn last_submitted(&self) -> u64 {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |(next, _)| *next)
    }

    /// Waits until everything submitted so far is durable.
    ///
    /// # Errors
    /// When the store failed.
    async fn wait_for_all(&self) -> Result<(), StoreError> {
        self.wait_for(self.last_submitted()).await
    }

    /// Blocks the thread until everything submitted so far is written (one commit at
    /// most: reads must see every change submitted before them).
    fn sync_blocking(&self) -> Result<(), StoreError> {
        let last = self.last_submitted();
        let (committed, changed) = &*self.committed_blocking;
        let mut state = committed.lock().unwrap_or_else(PoisonError::into_inner);
        while state.ticket < last && !state.failed {
            state = changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if state.ticket >= last {
            Ok(())
        } else {
            Err(self.failure())
        }
    }
}

impl Backend for RedbStore {
    /// Queues a change; returns its ticket. Call it under the lock that ordered the
    /// change, so that tickets follow that order. `release` is told once it is durable.
    fn submit(&self, change: Change, release: Option<Arc<dyn Release>>) -> u64 {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((next, sender)) = queue.as_mut() else {
            // Closed: the ticket is never committed, and waiting for it fails.
            return u64::MAX;
        };
        *next += 1;
        let ticket = *next;
        if sender.send((ticket, change, release)).is_err() {
            *queue = None;
        }
        ticket
    }

    fn saved(&self, ticket: u64) -> Saving<'_> {
        Box::pin(self.wait_for(ticket))
    }

    fn synced(&self) -> Saving<'_> {
        Box::pin(self.wait_for_all())
    }

    fn failed(&self) -> bool {
        self.committed.borrow().failed
    }

    fn check(&self) -> Result<(), String> {
        if self.failed() {
            return Err(format!(
                "the store in {} failed to save; restart the server once its disk is fixed",
                self.path.display()
            ));
        }
        // The file, in its directory: gone when the directory was removed or unmounted.
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_file() => Ok(()),
            Ok(_) => Err(format!("the store {} is not a file", self.path.display())),
            Err(e) => Err(format!("the store {}: {e}", self.path.display())),
        }
    }

    /// Commits what is queued and stops the committer (graceful shutdown).
    fn close(&self) {
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let committer = self
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(committer) = committer {
            let _ = committer.join();
        }
        drop(
            self.db
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    /// The stored state with this identifier, if any.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn load(&self, id: &str) -> Result<Option<Loaded>, StoreError> {
        let fail = |e: &dyn std::fmt::Display| {
            StoreError(format!(
                "cannot read state {id} from {}: {e}",
                self.path.display()
            ))
        };
        self.sync_blocking()?;
        let db = self
            .db
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError(format!("the store {} is closed", self.path.display())))?;
        let txn = db.begin_read().map_err(|e| fail(&e))?;
        let states = txn.open_table(STATES).map_err(|e| fail(&e))?;
        let Some(meta) = states.get(id).map_err(|e| fail(&e))? else {
            return Ok(None);
        };
        let meta: StateMeta = serde_json::from_str(meta.value()).map_err(|e| fail(&e))?;
        let entries = txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
        let mut value = JsonObject::new();
        for entry in entries
            .range((id, 0)..=(id, u64::MAX))
            .map_err(|e| fail(&e))?
        {
            let (_, entry) = entry.map_err(|e| fail(&e))?;
            let (key, json) = entry.value();
            let parsed = serde_json::from_str(json).map_err(|e| fail(&e))?;
            value.insert(key.to_owned(), parsed);
        }
        let outcomes = txn.open_table(OUTCOMES).map_err(|e| fail(&e))?;
        let mut sessions: HashMap<SessionKey, Vec<(u64, StoredOutcome)>> = HashMap::new();
        for entry in outcomes.range((id, "", "", 0)..).map_err(|e| fail(&e))? {
            let (key, outcome) = entry.map_err(|e| fail(&e))?;
            let (state, client, session, request_id) = key.value();
            if state != id {
                break;
            }
            let outcome = serde_json::from_str(outcome.value()).map_err(|e| fail(&e))?;
            sessions
                .entry(SessionKey {
                    client: client.to_owned(),
                    session: session.to_owned(),
                })
                .or_default()
                .push((request_id, outcome));
        }
        Ok(Some(Loaded {
            value,
            version: meta.version,
            created: from_millis(meta.created_ms),
            expires: meta.expires_ms.map(from_millis),
            sessions: sessions.into_iter().collect(),
        }))
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.close();
    }
}
