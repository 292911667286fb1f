//! The shallow-merge rule: top-level keys of an update replace the state's keys.

use serde_json::Value;

use crate::JsonObject;

/// What [`shallow_merge`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merge {
    /// The values the replaced keys had just before the merge. Keys the state did not
    /// have are absent (JavaScript's `undefined`).
    pub previous: JsonObject,
    /// The keys whose value is now different (new keys included), in update order.
    pub changed: Vec<String>,
}

/// Merges `updates` into `state`: each top-level key of `updates` replaces the
/// state's key; nested objects are not merged.
///
/// ```
/// # use state_sync_protocol::{shallow_merge, JsonObject};
/// # use serde_json::json;
/// let mut state = json!({"a": {"x": 1}, "b": 2}).as_object().cloned().unwrap();
/// let updates = json!({"a": {"y": 2}, "b": 2, "c": 3}).as_object().cloned().unwrap();
/// let merge = shallow_merge(&mut state, &updates);
/// assert_eq!(state, *json!({"a": {"y": 2}, "b": 2, "c": 3}).as_object().unwrap());
/// assert_eq!(merge.previous, *json!({"a": {"x": 1}, "b": 2}).as_object().unwrap());
/// assert_eq!(merge.changed, ["a", "c"]);
/// ```
pub fn shallow_merge(state: &mut JsonObject, updates: &JsonObject) -> Merge {
    let mut merge = Merge::default();
    for (key, value) in updates {
        match state.insert(key.clone(), value.clone()) {
            Some(old) => {
                if old != *value {
                    merge.changed.push(key.clone());
                }
                merge.previous.insert(key.clone(), old);
            }
            None => merge.changed.push(key.clone()),
        }
    }
    merge
}

/// The difference between two values of a state, as an update and the previous values:
/// what a client that was away missed. Applying `updates` to `old` with
/// [`shallow_merge`] gives `new`, except that keys `new` lacks become `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDiff {
    /// The keys whose value differs, with their value in `new` (`null` where `new`
    /// lacks the key).
    pub updates: JsonObject,
    /// The value in `old` of each key in `updates` that `old` had.
    pub previous: JsonObject,
}

impl StateDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }
}

/// Merges `updates` into `state` like [`shallow_merge`], without recording what was
/// there before: what a server does, which needs no previous values.
///
/// ```
/// # use state_sync_protocol::{apply_updates, JsonObject};
/// # use serde_json::json;
/// let mut state = json!({"a": 1, "b": 2}).as_object().cloned().unwrap();
/// apply_updates(&mut state, json!({"a": [3]}).as_object().unwrap());
/// assert_eq!(state, *json!({"a": [3], "b": 2}).as_object().unwrap());
/// ```
pub fn apply_updates(state: &mut JsonObject, updates: &JsonObject) {
    for (key, value) in updates {
        state.insert(key.clone(), value.clone());
    }
}

/// Computes what changed from `old` to `new` (see [`StateDiff`]).
pub fn diff(old: &JsonObject, new: &JsonObject) -> StateDiff {
    let mut result = StateDiff::default();
    for (key, value) in new {
        match old.get(key) {
            Some(previous) if previous == value => {}
            Some(previous) => {
                result.updates.insert(key.clone(), value.clone());
                result.previous.insert(key.clone(), previous.clone());
            }
            None => {
                result.updates.insert(key.clone(), value.clone());
            }
        }
    }
    for (key, previous) in old {
        if !new.contains_key(key) {
            result.updates.insert(key.clone(), Value::Null);
            result.previous.insert(key.clone(), previous.clone());
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn previous_values_are_the_old_ones_not_the_updates() {
        // The original client wrote the updates into the previous-values object.
        let mut state = object(json!({"count": 1}));
        let merge = shallow_merge(&mut state, &object(json!({"count": 2})));
        assert_eq!(merge.previous, object(json!({"count": 1})));
        assert_eq!(state, object(json!({"count": 2})));
    }

    #[test]
    fn unchanged_keys_are_not_reported_changed() {
        let mut state = object(json!({"a": [1, 2]}));
        let merge = shallow_merge(&mut state, &object(json!({"a": [1, 2]})));
        assert!(merge.changed.is_empty());
        assert_eq!(merge.previous, object(json!({"a": [1, 2]})));
    }

    #[test]
    fn null_is_a_value_not_a_deletion() {
        let mut state = object(json!({"a": 1}));
        shallow_merge(&mut state, &object(json!({"a": null})));
        assert_eq!(state, object(json!({"a": null})));
    }

    #[test]
    fn diff_reports_changed_added_and_removed_keys() {
        let old = object(json!({"same": 1, "changed": 1, "removed": true}));
        let new = object(json!({"same": 1, "changed": 2, "added": "x"}));
        let d = diff(&old, &new);
        assert_eq!(
            d.updates,
            object(json!({"changed": 2, "added": "x", "removed": null}))
        );
        assert_eq!(d.previous, object(json!({"changed": 1, "removed": true})));
        assert!(diff(&new, &new).is_empty());
    }
}
