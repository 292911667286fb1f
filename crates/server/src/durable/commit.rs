//! The committer thread of the durable store: group commit, and how each change is
//! written (the tables are described in the parent module).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use redb::{Database, ReadableTable};
use serde::Serialize;
use state_sync_protocol::DEDUP_WINDOW;
use tokio::sync::watch;

use super::{
    Change, Committed, Durability, ENTRIES, Job, KEYS, MAX_BATCH, OUTCOMES, STATES, StateMeta,
    millis,
};

/// Where the committer tells what is committed.
pub(super) struct Tell {
    pub(super) watch: watch::Sender<Committed>,
    pub(super) blocking: Arc<(Mutex<Committed>, std::sync::Condvar)>,
    pub(super) stats: Arc<(AtomicU64, AtomicU64)>,
}

impl Tell {
    fn send(&self, committed: Committed) {
        self.watch.send_replace(committed);
        let (state, changed) = &*self.blocking;
        *state.lock().unwrap_or_else(PoisonError::into_inner) = committed;
        changed.notify_all();
    }

    fn ticket(&self) -> u64 {
        self.watch.borrow().ticket
    }
}

/// The committer: one transaction for everything waiting, then release it.
pub(super) fn commit_loop(
    db: &Database,
    path: &Path,
    jobs: &mpsc::Receiver<Job>,
    committed: &Tell,
    durability: Durability,
) {
    let mut unsynced_since: Option<std::time::Instant> = None;
    loop {
        let first = match durability {
            Durability::WriteBehind(interval) if unsynced_since.is_some() => {
                let waited = unsynced_since.map_or(Duration::ZERO, |since| since.elapsed());
                match jobs.recv_timeout(interval.saturating_sub(waited)) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = fsync(db);
                        return;
                    }
                }
            }
            _ => match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => {
                    let _ = fsync(db);
                    return;
                }
            },
        };
        let Some(first) = first else {
            // The write-behind interval is over: make what was acknowledged durable.
            if let Err(e) = fsync(db) {
                tracing::error!(path = %path.display(), "store sync failed: {e}");
            }
            unsynced_since = None;
            continue;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |(ticket, _, _)| *ticket);
        let sync = matches!(durability, Durability::Synchronous);
        let started = std::time::Instant::now();
        let written = write(db, &batch, sync);
        let (took, size) = crate::metrics::commit_histograms("disk");
        took.record(started.elapsed().as_secs_f64());
        #[allow(clippy::cast_precision_loss)]
        size.record(batch.len() as f64);
        match written {
            Ok(()) => {
                if !sync && unsynced_since.is_none() {
                    unsynced_since = Some(std::time::Instant::now());
                }
                committed.send(Committed {
                    ticket: last,
                    failed: false,
                });
                release(&batch, last, false);
                committed.stats.0.fetch_add(1, Ordering::Relaxed);
                committed
                    .stats
                    .1
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "store commit failed: {e}; nothing more is acknowledged");
                let ticket = committed.ticket();
                committed.send(Committed {
                    ticket,
                    failed: true,
                });
                release(&batch, ticket, true);
                // Everything after fails too.
                while let Ok(job) = jobs.recv() {
                    release(&[job], ticket, true);
                }
                return;
            }
        }
    }
}

/// Tells each state in `batch` (once) what is durable.
fn release(batch: &[Job], committed: u64, failed: bool) {
    // The broadcasts they release are written once all are told, one write per
    // connection.
    crate::outbox::corked_sync(|| tell_states(batch, committed, failed));
}

fn tell_states(batch: &[Job], committed: u64, failed: bool) {
    let mut told: Vec<*const ()> = Vec::new();
    for (_, _, release) in batch {
        if let Some(release) = release {
            let id = Arc::as_ptr(release).cast::<()>();
            if !told.contains(&id) {
                told.push(id);
                release.release(committed, failed);
            }
        }
    }
}

fn fsync(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.commit()?;
    Ok(())
}

/// The tables a commit writes.
struct Tables<'t> {
    states: redb::Table<'t, &'static str, &'static str>,
    keys: redb::Table<'t, (&'static str, &'static str), u64>,
    entries: redb::Table<'t, (&'static str, u64), (&'static str, &'static str)>,
    outcomes: redb::Table<'t, (&'static str, &'static str, &'static str, u64), &'static str>,
}

/// What the updates of one commit leave, written once at its end: within a commit a
/// state's record is read and written once, and a key updated many times is written
/// once with its last value.
#[derive(Default)]
struct Pending<'b> {
    metas: HashMap<&'b str, StateMeta>,
    /// (state, key) → the key's last value (`None`: removed), in the order keys were
    /// first written.
    values: HashMap<(&'b str, &'b str), Option<&'b str>>,
    order: Vec<(&'b str, &'b str)>,
}

impl<'b> Pending<'b> {
    fn update(
        &mut self,
        tables: &Tables<'_>,
        id: &'b str,
        version: u64,
        values: &'b [(String, String)],
        removed: &'b [String],
    ) -> Result<(), redb::Error> {
        if !self.metas.contains_key(id) {
            let Some(stored) = tables.states.get(id)?.map(|m| m.value().to_owned()) else {
                // Removed (or never created): nothing to update.
                return Ok(());
            };
            let meta: StateMeta =
                serde_json::from_str(&stored).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            self.metas.insert(id, meta);
        }
        if let Some(meta) = self.metas.get_mut(id) {
            meta.version = version;
        }
        let written = values.iter().map(|(key, json)| (key, Some(json.as_str())));
        for (key, json) in written.chain(removed.iter().map(|key| (key, None))) {
            let slot = (id, key.as_str());
            if self.values.insert(slot, json).is_none() {
                self.order.push(slot);
            }
        }
        Ok(())
    }

    /// Whether `values` sets a key that an earlier update of this commit removed: in
    /// memory such a key went last, so it must take a new slot, after what was written
    /// before (collapsed with its removal it would keep its old place).
    fn sets_removed(&self, id: &'b str, values: &'b [(String, String)]) -> bool {
        values
            .iter()
            .any(|(key, _)| self.values.get(&(id, key.as_str())) == Some(&None))
    }

    /// Writes what the updates left.
    fn flush(&mut self, tables: &mut Tables<'_>) -> Result<(), redb::Error> {
        for (id, key) in self.order.drain(..) {
            let Some(json) = self.values.remove(&(id, key)) else {
                continue;
            };
            let Some(meta) = self.metas.get_mut(id) else {
                continue;
            };
            match json {
                Some(json) => {
                    write_entry(id, key, json, meta, &mut tables.keys, &mut tables.entries)?;
                }
                None => {
                    if let Some(slot) = tables.keys.remove((id, key))? {
                        tables.entries.remove((id, slot.value()))?;
                    }
                }
            }
        }
        for (id, meta) in self.metas.drain() {
            tables.states.insert(id, encode(&meta).as_str())?;
        }
        Ok(())
    }
}

fn write(db: &Database, batch: &[Job], sync: bool) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    if !sync {
        txn.set_durability(redb::Durability::None)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    }
    {
        let mut tables = Tables {
            states: txn.open_table(STATES)?,
            keys: txn.open_table(KEYS)?,
            entries: txn.open_table(ENTRIES)?,
            outcomes: txn.open_table(OUTCOMES)?,
        };
        let mut pending = Pending::default();
        for (_, change, _) in batch {
            match change {
                Change::Create {
                    id,
                    entries: values,
                    created,
                    expires,
                } => {
                    pending.flush(&mut tables)?;
                    remove_state(id, &mut tables)?;
                    let mut meta = StateMeta {
                        version: 0,
                        created_ms: millis(*created),
                        expires_ms: expires.map(millis),
                        next_slot: 0,
                    };
                    for (key, json) in values {
                        write_entry(
                            id,
                            key,
                            json,
                            &mut meta,
                            &mut tables.keys,
                            &mut tables.entries,
                        )?;
                    }
                    tables.states.insert(id.as_str(), encode(&meta).as_str())?;
                }
                Change::Update {
                    id,
                    version,
                    entries: values,
                    removed,
                } => {
                    if pending.sets_removed(id, values) {
                        pending.flush(&mut tables)?;
                    }
                    pending.update(&tables, id, *version, values, removed)?;
                }
                Change::Outcome {
                    id,
                    session,
                    request_id,
                    outcome,
                } => {
                    let client = session.client.as_str();
                    let name = session.session.as_str();
                    tables.outcomes.insert(
                        (id.as_str(), client, name, *request_id),
                        encode(outcome).as_str(),
                    )?;
                    if let Some(oldest) = request_id.checked_sub(DEDUP_WINDOW as u64) {
                        tables.outcomes.retain_in(
                            (id.as_str(), client, name, 0)..=(id.as_str(), client, name, oldest),
                            |_, _| false,
                        )?;
                    }
                }
                Change::Remove { id } => {
                    pending.flush(&mut tables)?;
                    remove_state(id, &mut tables)?;
                }
            }
        }
        pending.flush(&mut tables)?;
    }
    txn.commit()?;
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Writes one key of a state, in the slot that keeps its place (a new key gets the
/// next slot).
fn write_entry(
    id: &str,
    key: &str,
    json: &str,
    meta: &mut StateMeta,
    keys: &mut redb::Table<'_, (&'static str, &'static str), u64>,
    entries: &mut redb::Table<'_, (&'static str, u64), (&'static str, &'static str)>,
) -> Result<(), redb::Error> {
    let existing = keys.get((id, key))?.map(|slot| slot.value());
    let slot = match existing {
        Some(slot) => slot,
        None => {
            let slot = meta.next_slot;
            meta.next_slot += 1;
            keys.insert((id, key), slot)?;
            slot
        }
    };
    entries.insert((id, slot), (key, json))?;
    Ok(())
}

fn remove_state(id: &str, tables: &mut Tables<'_>) -> Result<(), redb::Error> {
    let Tables {
        states,
        keys,
        entries,
        outcomes,
    } = tables;
    if states.remove(id)?.is_none() {
        return Ok(());
    }
    let mut names = Vec::new();
    for key in keys.range((id, "")..)? {
        let (key, _) = key?;
        let (state, name) = key.value();
        if state != id {
            break;
        }
        names.push(name.to_owned());
    }
    for name in &names {
        keys.remove((id, name.as_str()))?;
    }
    entries.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
    let mut sessions = Vec::new();
    for key in outcomes.range((id, "", "", 0)..)? {
        let (key, _) = key?;
        let (state, client, session, request_id) = key.value();
        if state != id {
            break;
        }
        sessions.push((client.to_owned(), session.to_owned(), request_id));
    }
    for (client, session, request_id) in &sessions {
        outcomes.remove((id, client.as_str(), session.as_str(), *request_id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crate::backend::Backend;

    use super::super::{Durability, FILE_NAME, RedbStore};
    use super::*;

    fn update(version: u64, set: &[(&str, &str)], removed: &[&str]) -> Job {
        let change = Change::Update {
            id: "s".into(),
            version,
            entries: set
                .iter()
                .map(|(key, json)| ((*key).to_owned(), (*json).to_owned()))
                .collect(),
            removed: removed.iter().map(|key| (*key).to_owned()).collect(),
        };
        (version + 1, change, None)
    }

    #[test]
    fn a_key_removed_and_set_again_in_one_commit_comes_last_like_in_memory() {
        let dir = std::env::temp_dir().join(format!("state-sync-commit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = Database::create(dir.join(FILE_NAME)).unwrap();
        let create = Change::Create {
            id: "s".into(),
            entries: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            created: SystemTime::now(),
            expires: None,
        };
        // In memory: {"a":1,"b":2} → remove a → set a → set x, y → remove x → set x
        // gives b, a, y, x. All in one commit.
        let batch = [
            (1, create, None),
            update(1, &[], &["a"]),
            update(2, &[("a", "3")], &[]),
            update(3, &[("x", "4"), ("y", "5")], &[]),
            update(4, &[], &["x"]),
            update(5, &[("x", "6")], &[]),
        ];
        write(&db, &batch, true).unwrap();
        drop(db);
        let store = RedbStore::open(&dir, Durability::Synchronous).unwrap();
        let loaded = store.load("s").unwrap().unwrap();
        let keys: Vec<&str> = loaded.value.keys().map(String::as_str).collect();
        assert_eq!(keys, ["b", "a", "y", "x"]);
        assert_eq!(loaded.value["a"], 3);
        assert_eq!(loaded.value["x"], 6);
        assert_eq!(loaded.version, 5);
        store.close();
        let _ = std::fs::remove_dir_all(dir);
    }
}
