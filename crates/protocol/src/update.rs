//! Updates beyond the original's shallow merge, for concurrent writers: atomic
//! operations on top-level keys (append to an array, increment a number, remove a key)
//! and conditional updates (applied only at a given version).
//!
//! A plain update sets top-level keys: the last writer wins per key, and a client that
//! sends a whole array it computed from an old copy erases what others appended
//! meanwhile. An [`Operation`] is applied by the server against the state's current
//! value, under the state's lock, so any number of concurrent senders all land. A
//! conditional update ([`Update::if_version`]) is applied only if the state is still at
//! the version it was computed from; otherwise it fails with `conflict` and the current
//! version, and changes nothing: what functional updates (`update_state_with`) build on.
//!
//! On the wire (UPDATE_STATE, extension fields; see `docs/protocol.md`):
//!
//! ```json
//! {"type": 3, "data": {"updates": {"title": "Draft"}, "requestId": 8, "ifVersion": 41,
//!   "ops": {"messages": {"append": [{"text": "hi"}], "max": 100},
//!           "count": {"increment": 1}, "draft": {"remove": true}}}}
//! ```

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serializer};
use serde_json::{Number, Value};

use crate::JsonObject;

/// An atomic operation on one top-level key of a state.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Appends `items` to the array at the key (a missing key counts as `[]`); with
    /// `max`, then drops the oldest items so that at most `max` remain.
    Append {
        /// The items, appended in order.
        items: Vec<Value>,
        /// The most items the array keeps (the oldest go first).
        max: Option<u64>,
    },
    /// Adds a number to the number at the key (a missing key counts as `0`). Two
    /// integers add exactly, to a sum from `i64::MIN` to `u64::MAX`; otherwise as doubles.
    Increment(Number),
    /// Removes the key from the state.
    Remove,
}

/// What an update asks of a state: top-level keys to set, operations on other keys,
/// and optionally the version it must find the state at.
///
/// ```
/// # use state_sync_protocol::Update;
/// # use serde_json::json;
/// let update = Update::new()
///     .set_key("title", json!("Draft 2"))
///     .append_capped("messages", [json!({"text": "hi"})], 100)
///     .increment("edits", 1)
///     .remove_key("draft")
///     .if_version(41);
/// let state = json!({"messages": [], "edits": 2, "draft": "x"});
/// let resolved = update.resolve(state.as_object().unwrap()).unwrap();
/// assert_eq!(resolved.values["edits"], 3);
/// assert_eq!(resolved.removed, ["draft"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// Keys replaced by these values (the original's `updates`).
    pub set: JsonObject,
    /// Operations, at most one per key, on keys not in `set`.
    pub ops: Vec<(String, Operation)>,
    /// Apply only if the state is at this version; otherwise fail with `conflict`.
    pub expected_version: Option<u64>,
}

impl From<JsonObject> for Update {
    fn from(set: JsonObject) -> Self {
        Update {
            set,
            ..Update::default()
        }
    }
}

/// How many times a client's functional update is computed and sent while it
/// conflicts with other writers before it gives up (both clients).
pub const MAX_ATTEMPTS: u32 = 32;

/// The longest random delay, in microseconds, a functional update waits after its
/// conflict number `attempt` (from 0) before it computes again, on top of waiting for
/// the newer state: 0.5 ms × 2^min(attempt, 8), so at most 128 ms. It spreads writers
/// who keep colliding on one state.
pub fn conflict_spread_micros(attempt: u32) -> u64 {
    500 << attempt.min(8)
}

/// The message of a functional update that gave up after [`MAX_ATTEMPTS`] conflicts.
pub fn gave_up_message() -> String {
    format!(
        "Could not update state: it changed under the update {MAX_ATTEMPTS} times in a row \
         (other writers kept changing it); nothing was applied"
    )
}

/// Why an operation cannot be applied to the state's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationError(pub String);

impl std::fmt::Display for OperationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OperationError {}

/// An update resolved against a state: the resulting value of every key it sets or
/// operates on, and the keys it removes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// New top-level values (set keys, and the results of appends and increments).
    pub values: JsonObject,
    /// Keys removed (absent from `values`).
    pub removed: Vec<String>,
    /// The appends among the operations: a client that holds the state the update
    /// was resolved against can apply them itself, instead of receiving whole arrays.
    pub appended: Vec<(String, Operation)>,
}

impl Update {
    /// An update that does nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a top-level key (replacing an operation on it).
    #[must_use]
    pub fn set_key(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        self.ops.retain(|(k, _)| *k != key);
        self.set.insert(key, value.into());
        self
    }

    fn op(mut self, key: impl Into<String>, operation: Operation) -> Self {
        let key = key.into();
        self.set.remove(&key);
        match self.ops.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => *existing = operation,
            None => self.ops.push((key, operation)),
        }
        self
    }

    /// Appends items to the array at `key`.
    #[must_use]
    pub fn append(self, key: impl Into<String>, items: impl IntoIterator<Item = Value>) -> Self {
        let items = items.into_iter().collect();
        self.op(key, Operation::Append { items, max: None })
    }

    /// Appends items to the array at `key`, keeping at most `max` (the oldest go).
    #[must_use]
    pub fn append_capped(
        self,
        key: impl Into<String>,
        items: impl IntoIterator<Item = Value>,
        max: u64,
    ) -> Self {
        let items = items.into_iter().collect();
        self.op(
            key,
            Operation::Append {
                items,
                max: Some(max),
            },
        )
    }

    /// Adds `by` to the number at `key`.
    #[must_use]
    pub fn increment(self, key: impl Into<String>, by: impl Into<Number>) -> Self {
        self.op(key, Operation::Increment(by.into()))
    }

    /// Removes `key` from the state.
    #[must_use]
    pub fn remove_key(self, key: impl Into<String>) -> Self {
        self.op(key, Operation::Remove)
    }

    /// Applies the update only if the state is at `version`.
    #[must_use]
    pub fn if_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Checks that no key is changed twice: set and operated on, or operated on twice
    /// (the builder never does that; an update built by hand, or returned by an
    /// interceptor, can).
    ///
    /// # Errors
    /// The first key changed twice.
    pub fn check_keys(&self) -> Result<(), OperationError> {
        for (n, (key, _)) in self.ops.iter().enumerate() {
            if self.set.contains_key(key) || self.ops[..n].iter().any(|(k, _)| k == key) {
                return Err(OperationError(format!(
                    "key {key:?} is changed twice by one update; an update sets a key or \
                     applies one operation to it"
                )));
            }
        }
        Ok(())
    }

    /// Whether it sets nothing and operates on nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.ops.is_empty()
    }

    /// What the update does to `state`: the new value of every key it touches, and
    /// the keys it removes. Set keys come first, then increments, then appends, each
    /// in order.
    ///
    /// # Errors
    /// An operation that does not fit the key's current value: appending to something
    /// that is not an array, incrementing something that is not a number, or an
    /// increment whose result is out of range. A key that is both set and operated on,
    /// or operated on twice (which the wire cannot carry, but an interceptor could
    /// return).
    pub fn resolve(&self, state: &JsonObject) -> Result<Resolved, OperationError> {
        self.check_keys()?;
        let mut resolved = Resolved {
            values: self.set.clone(),
            ..Resolved::default()
        };
        let mut appended = Vec::new();
        for (key, operation) in &self.ops {
            match operation {
                Operation::Remove => resolved.removed.push(key.clone()),
                Operation::Append { items, max } => {
                    appended.push((key, append(key, state.get(key), items, *max)?));
                    resolved.appended.push((key.clone(), operation.clone()));
                }
                Operation::Increment(by) => {
                    let value = increment(key, state.get(key), by)?;
                    resolved.values.insert(key.clone(), value);
                }
            }
        }
        // Appends last: a client that applies them itself after merging the other
        // values adds new keys in the same order.
        for (key, value) in appended {
            resolved.values.insert(key.clone(), value);
        }
        Ok(resolved)
    }
}

fn append(
    key: &str,
    current: Option<&Value>,
    items: &[Value],
    max: Option<u64>,
) -> Result<Value, OperationError> {
    let current = match current {
        None => &[][..],
        Some(Value::Array(array)) => array.as_slice(),
        Some(other) => {
            return Err(OperationError(format!(
                "cannot append to {key:?}: it is {}, not an array",
                crate::json_kind(other)
            )));
        }
    };
    let total = current.len() + items.len();
    let keep = max.map_or(total, |max| {
        total.min(usize::try_from(max).unwrap_or(usize::MAX))
    });
    let skip = total - keep;
    let array = current
        .iter()
        .chain(items)
        .skip(skip)
        .cloned()
        .collect::<Vec<_>>();
    Ok(Value::Array(array))
}

/// Appends `items` to `array`, then drops the oldest beyond `max`: what
/// [`Operation::Append`] does, in place (a client applying a server's append).
pub fn append_in_place(array: &mut Vec<Value>, items: &[Value], max: Option<u64>) {
    array.extend_from_slice(items);
    if let Some(max) = max {
        let keep = usize::try_from(max).unwrap_or(usize::MAX);
        let excess = array.len().saturating_sub(keep);
        array.drain(..excess);
    }
}

fn increment(key: &str, current: Option<&Value>, by: &Number) -> Result<Value, OperationError> {
    let zero = Number::from(0);
    let current = match current {
        None => &zero,
        Some(Value::Number(number)) => number,
        Some(other) => {
            return Err(OperationError(format!(
                "cannot increment {key:?}: it is {}, not a number",
                crate::json_kind(other)
            )));
        }
    };
    let out_of_range = || {
        OperationError(format!(
            "cannot increment {key:?}: the result is out of range"
        ))
    };
    // Two integers (each an i64 or a u64) add exactly; the sum must fit one of them.
    let integer = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    if let (Some(a), Some(b)) = (integer(current), integer(by)) {
        let sum = a + b;
        return i64::try_from(sum)
            .map(Value::from)
            .or_else(|_| u64::try_from(sum).map(Value::from))
            .map_err(|_| out_of_range());
    }
    let (Some(a), Some(b)) = (current.as_f64(), by.as_f64()) else {
        return Err(out_of_range());
    };
    Number::from_f64(a + b)
        .map(Value::Number)
        .ok_or_else(out_of_range)
}

/// The `ops` field on the wire: an object from key to `{"append": [...], "max": n}`,
/// `{"increment": n}` or `{"remove": true}`.
pub(crate) mod wire {
    use super::*;

    /// Encodes operations as the `ops` object.
    pub(crate) fn serialize<S: Serializer>(
        ops: &[(String, Operation)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(ops.len()))?;
        for (key, operation) in ops {
            map.serialize_entry(key, &to_value(operation))?;
        }
        map.end()
    }

    /// Decodes the `ops` object.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, Operation)>, D::Error> {
        let value = Value::deserialize(deserializer)?;
        parse(&value).map_err(D::Error::custom)
    }

    fn to_value(operation: &Operation) -> Value {
        let mut object = JsonObject::new();
        match operation {
            Operation::Append { items, max } => {
                object.insert("append".into(), Value::Array(items.clone()));
                if let Some(max) = max {
                    object.insert("max".into(), Value::from(*max));
                }
            }
            Operation::Increment(by) => {
                object.insert("increment".into(), Value::Number(by.clone()));
            }
            Operation::Remove => {
                object.insert("remove".into(), Value::Bool(true));
            }
        }
        Value::Object(object)
    }

    /// Reads the `ops` object; the error says what is wrong, for people.
    pub(crate) fn parse(value: &Value) -> Result<Vec<(String, Operation)>, String> {
        let Value::Object(ops) = value else {
            return Err(format!(
                "data.ops must be a JSON object from key to operation, got {}",
                crate::json_kind(value)
            ));
        };
        ops.iter()
            .map(|(key, op)| parse_one(key, op).map(|op| (key.clone(), op)))
            .collect()
    }

    fn parse_one(key: &str, op: &Value) -> Result<Operation, String> {
        let expected = || {
            format!(
                "data.ops.{key} must be {{\"append\": [items], \"max\": n}}, \
                 {{\"increment\": number}} or {{\"remove\": true}}"
            )
        };
        let Value::Object(op) = op else {
            return Err(expected());
        };
        let only = |name: &str, allowed: &[&str]| {
            op.keys()
                .all(|k| k == name || allowed.contains(&k.as_str()))
        };
        if let Some(items) = op.get("append") {
            let Value::Array(items) = items else {
                return Err(format!("data.ops.{key}.append must be an array of items"));
            };
            let max = match op.get("max") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
                Some(_) => {
                    return Err(format!("data.ops.{key}.max must be a non-negative integer"));
                }
            };
            if !only("append", &["max"]) {
                return Err(expected());
            }
            return Ok(Operation::Append {
                items: items.clone(),
                max,
            });
        }
        if let Some(by) = op.get("increment") {
            let Value::Number(by) = by else {
                return Err(format!("data.ops.{key}.increment must be a number"));
            };
            if !only("increment", &[]) {
                return Err(expected());
            }
            return Ok(Operation::Increment(by.clone()));
        }
        if op.get("remove") == Some(&Value::Bool(true)) && only("remove", &[]) {
            return Ok(Operation::Remove);
        }
        Err(expected())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn append_caps_to_the_newest() {
        let state = object(json!({"list": [1, 2, 3]}));
        let update = Update::new().append_capped("list", [json!(4), json!(5)], 3);
        assert_eq!(
            update.resolve(&state).unwrap().values["list"],
            json!([3, 4, 5])
        );
        let update = Update::new().append_capped("list", [json!(4)], 0);
        assert_eq!(update.resolve(&state).unwrap().values["list"], json!([]));
        let update = Update::new().append("new", [json!("a")]);
        assert_eq!(update.resolve(&state).unwrap().values["new"], json!(["a"]));
    }

    #[test]
    fn increment_keeps_integers_exact_and_refuses_overflow() {
        let state = object(json!({"n": 9_007_199_254_740_993_i64, "f": 0.5, "s": "x"}));
        let resolved = Update::new().increment("n", 1).resolve(&state).unwrap();
        assert_eq!(resolved.values["n"], json!(9_007_199_254_740_994_i64));
        let resolved = Update::new().increment("f", 1).resolve(&state).unwrap();
        assert_eq!(resolved.values["f"], json!(1.5));
        let resolved = Update::new()
            .increment("missing", -2)
            .resolve(&state)
            .unwrap();
        assert_eq!(resolved.values["missing"], json!(-2));
        let error = Update::new().increment("s", 1).resolve(&state).unwrap_err();
        assert!(error.0.contains("not a number"), "{error}");
        let big = object(json!({"n": u64::MAX}));
        let error = Update::new().increment("n", 1).resolve(&big).unwrap_err();
        assert!(error.0.contains("out of range"), "{error}");
        // An i64 and a u64 add exactly too, in either direction.
        let huge = object(json!({"u": u64::MAX, "i": -1}));
        let resolved = Update::new().increment("u", -1).resolve(&huge).unwrap();
        assert_eq!(resolved.values["u"], json!(u64::MAX - 1));
        let resolved = Update::new()
            .increment("i", u64::MAX)
            .resolve(&huge)
            .unwrap();
        assert_eq!(resolved.values["i"], json!(u64::MAX - 1));
        let error = Update::new().increment("u", 1).resolve(&huge).unwrap_err();
        assert!(error.0.contains("out of range"), "{error}");
        let small = object(json!({"n": i64::MIN}));
        let error = Update::new()
            .increment("n", -1)
            .resolve(&small)
            .unwrap_err();
        assert!(error.0.contains("out of range"), "{error}");
        let list = object(json!({"n": [1]}));
        let error = Update::new().append("n", [json!(1)]);
        assert!(error.resolve(&list).is_ok());
        let error = Update::new()
            .append("s", [json!(1)])
            .resolve(&state)
            .unwrap_err();
        assert!(error.0.contains("not an array"), "{error}");
    }

    #[test]
    fn a_key_changed_twice_is_refused() {
        let state = object(json!({"a": 1}));
        let twice = Update {
            set: object(json!({"a": 2})),
            ops: vec![("a".into(), Operation::Remove)],
            expected_version: None,
        };
        assert!(
            twice
                .resolve(&state)
                .unwrap_err()
                .0
                .contains("changed twice")
        );
        let twice = Update {
            ops: vec![
                ("a".into(), Operation::Increment(1.into())),
                ("a".into(), Operation::Remove),
            ],
            ..Update::default()
        };
        assert!(twice.resolve(&state).is_err());
    }

    #[test]
    fn the_last_word_on_a_key_wins_in_the_builder() {
        let update = Update::new()
            .set_key("a", 1)
            .increment("a", 2)
            .remove_key("b")
            .set_key("b", 3);
        assert_eq!(update.set, object(json!({"b": 3})));
        assert_eq!(
            update.ops,
            vec![("a".to_owned(), Operation::Increment(2.into()))]
        );
    }

    #[test]
    fn the_wire_form_round_trips_and_bad_forms_say_why() {
        let ops = json!({"m": {"append": [1], "max": 2}, "c": {"increment": -1.5}, "d": {"remove": true}});
        let parsed = wire::parse(&ops).unwrap();
        assert_eq!(parsed.len(), 3);
        let mut out = Vec::new();
        wire::serialize(&parsed, &mut serde_json::Serializer::new(&mut out)).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), ops);
        for (bad, says) in [
            (json!([1]), "must be a JSON object"),
            (json!({"k": 1}), "must be {\"append\""),
            (json!({"k": {"append": 1}}), "append must be an array"),
            (
                json!({"k": {"append": [], "max": -1}}),
                "max must be a non-negative",
            ),
            (
                json!({"k": {"append": [], "increment": 1}}),
                "must be {\"append\"",
            ),
            (
                json!({"k": {"increment": "1"}}),
                "increment must be a number",
            ),
            (json!({"k": {"remove": false}}), "must be {\"append\""),
        ] {
            let error = wire::parse(&bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
