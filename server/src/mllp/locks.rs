//! Per-key async locks that serialise the conditional writes of concurrently processed
//! messages.
//!
//! Two messages on two connections naming the same new patient would otherwise both find
//! no match for `ifNoneExist: identifier=…` (R4 http.html#ccreate) on PostgreSQL, where
//! concurrent transactions do not see each other's uncommitted rows, and both create it. The
//! keys of a Bundle are its conditional write criteria ([`write_keys`]); a message holds the
//! locks of all its keys, taken in sorted order (so no deadlock), until its transaction has
//! committed. Messages about different patients run in parallel. SQLite serialises writers
//! anyway; the locks cost little there.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

/// A map from key to lock; entries are dropped when nobody holds or waits for them.
///
/// It also remembers keys whose criteria matched an existing resource (see
/// [`KeyedLocks::remember`]): a message may run without the lock of such a key, since the
/// lock only guards against two concurrent *creates*; if the key then matches nothing after
/// all (the resource was deleted or changed meanwhile), the caller rolls back, forgets the
/// key and runs again holding the lock.
#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    existing: Mutex<HashSet<String>>,
}

/// At most this many remembered keys; the set is cleared when full (it is only a hint).
const MAX_REMEMBERED: usize = 100_000;

/// The locks of one message, released on drop.
pub struct Held<'a> {
    owner: &'a KeyedLocks,
    guards: Vec<(String, OwnedMutexGuard<()>)>,
}

impl KeyedLocks {
    /// Waits for and takes the locks of all `keys` (sorted, deduplicated).
    pub async fn lock(&self, keys: BTreeSet<String>) -> Held<'_> {
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            let lock = {
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                map.entry(key.clone()).or_default().clone()
            };
            guards.push((key, lock.lock_owned().await));
        }
        Held {
            owner: self,
            guards,
        }
    }

    /// Whether `key` was seen matching an existing resource (a hint, see the type docs).
    pub fn is_known(&self, key: &str) -> bool {
        self.existing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// Remembers that `key` matched an existing resource in a committed transaction.
    pub fn remember(&self, key: &str) {
        let mut set = self.existing.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() >= MAX_REMEMBERED {
            set.clear();
        }
        set.insert(key.to_string());
    }

    /// Forgets `key`: its next use takes the lock again.
    pub fn forget(&self, key: &str) {
        self.existing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Keys currently in the map (for tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is held or awaited.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut map = self.owner.map.lock().unwrap_or_else(|p| p.into_inner());
        for (key, guard) in self.guards.drain(..) {
            drop(guard);
            // Only the map holds the lock now: nobody waits for it.
            if map.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
                map.remove(&key);
            }
        }
    }
}

/// The conditional write criteria of a transaction Bundle, as `Type?criteria`: the
/// `ifNoneExist` of POST entries and the `request.url` of conditional PUT and DELETE entries.
pub fn write_keys(bundle: &Value) -> BTreeSet<String> {
    entry_write_keys(bundle).into_iter().flatten().collect()
}

/// The conditional write criterion of each entry of a transaction Bundle, in entry order
/// (`None` for an entry without one); see [`write_keys`].
pub fn entry_write_keys(bundle: &Value) -> Vec<Option<String>> {
    let entries = bundle.get("entry").and_then(Value::as_array);
    entries
        .into_iter()
        .flatten()
        .map(|entry| {
            let request = entry.get("request")?;
            let method = request.get("method").and_then(Value::as_str).unwrap_or("");
            let url = request.get("url").and_then(Value::as_str).unwrap_or("");
            match method {
                "POST" => {
                    let criteria = request.get("ifNoneExist").and_then(Value::as_str)?;
                    let criteria = criteria.trim_start_matches('?');
                    Some(format!("{url}?{criteria}"))
                }
                "PUT" | "DELETE" if url.contains('?') => Some(url.to_string()),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_keys_are_conditional_creates_updates_and_deletes() {
        let b = json!({"entry": [
            {"request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=s|1"}},
            {"request": {"method": "PUT", "url": "Encounter?identifier=s|2"}},
            {"request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "PUT", "url": "Patient/abc"}},
        ]});
        let keys: Vec<String> = write_keys(&b).into_iter().collect();
        assert_eq!(
            keys,
            vec!["Encounter?identifier=s|2", "Patient?identifier=s|1"]
        );
    }

    #[tokio::test]
    async fn a_second_holder_of_a_key_waits_and_the_map_empties() {
        let locks = Arc::new(KeyedLocks::default());
        let keys: BTreeSet<String> = ["a".to_string()].into();
        let held = locks.lock(keys.clone()).await;
        let l2 = locks.clone();
        let k2 = keys.clone();
        let waiter = tokio::spawn(async move {
            let _h = l2.lock(k2).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap();
        assert!(locks.is_empty());
    }
}
