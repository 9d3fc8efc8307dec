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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

/// A map from key to lock; entries are dropped when nobody holds or waits for them.
#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

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
    let mut keys = BTreeSet::new();
    let entries = bundle.get("entry").and_then(Value::as_array);
    for entry in entries.into_iter().flatten() {
        let Some(request) = entry.get("request") else {
            continue;
        };
        let method = request.get("method").and_then(Value::as_str).unwrap_or("");
        let url = request.get("url").and_then(Value::as_str).unwrap_or("");
        match method {
            "POST" => {
                if let Some(criteria) = request.get("ifNoneExist").and_then(Value::as_str) {
                    let criteria = criteria.trim_start_matches('?');
                    keys.insert(format!("{url}?{criteria}"));
                }
            }
            "PUT" | "DELETE" if url.contains('?') => {
                keys.insert(url.to_string());
            }
            _ => {}
        }
    }
    keys
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
