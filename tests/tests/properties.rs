//! Property tests of the merge rules and the decoder, over generated JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Map, Value};
use state_sync_protocol::{
    ClientMessage, ConnectToState, JsonObject, Operation, ServerMessage, UpdateState,
    apply_updates, diff, shallow_merge,
};

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z\\u{e9}\\u{1f600}\"\\\\]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-e]{1,2}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = JsonObject> {
    prop::collection::vec(("[a-f]{1,2}", json()), 0..6)
        .prop_map(|entries| entries.into_iter().collect::<Map<String, Value>>())
}

proptest! {
    #[test]
    fn merging_replaces_exactly_the_updated_keys(state in object(), updates in object()) {
        let mut merged = state.clone();
        let merge = shallow_merge(&mut merged, &updates);
        for (key, value) in &merged {
            let expected = updates.get(key).or_else(|| state.get(key)).unwrap();
            prop_assert_eq!(value, expected);
        }
        prop_assert_eq!(merged.len(), state.keys().chain(updates.keys()).collect::<std::collections::HashSet<_>>().len());
        for (key, previous) in &merge.previous {
            prop_assert_eq!(Some(previous), state.get(key));
        }
        // The server's merge gives the same state as the clients'.
        let mut applied = state.clone();
        apply_updates(&mut applied, &updates);
        prop_assert_eq!(&applied, &merged);
        // And merging again changes nothing.
        let again = shallow_merge(&mut applied, &updates);
        prop_assert!(again.changed.is_empty());
    }

    #[test]
    fn keys_keep_their_place_and_new_ones_follow_in_update_order(state in object(), updates in object()) {
        let mut merged = state.clone();
        apply_updates(&mut merged, &updates);
        let mut expected: Vec<&String> = state.keys().collect();
        expected.extend(updates.keys().filter(|key| !state.contains_key(*key)));
        prop_assert_eq!(merged.keys().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn a_diff_applied_to_the_old_value_gives_the_new_one(old in object(), new in object()) {
        let changes = diff(&old, &new);
        let mut patched = old.clone();
        apply_updates(&mut patched, &changes.updates);
        for (key, value) in &patched {
            match new.get(key) {
                Some(expected) => prop_assert_eq!(value, expected),
                None => prop_assert_eq!(value, &Value::Null, "{} left the state", key),
            }
        }
        prop_assert_eq!(changes.is_empty(), old == new);
    }

    #[test]
    fn client_messages_survive_a_round_trip(
        state in "[a-z]{1,10}",
        session in prop::option::of("[a-z0-9-]{1,20}"),
        last_sent in prop::option::of(any::<u64>()),
        updates in object(),
        request_id in prop::option::of(any::<u64>()),
    ) {
        let connect = ClientMessage::ConnectToState(ConnectToState {
            state_identifier: state,
            last_sent: session.as_ref().and(last_sent),
            accepts_ops: session.is_some(),
            presence: None,
            session,
        });
        prop_assert_eq!(ClientMessage::from_json(&connect.to_json()).unwrap(), connect);
        // Operations on keys of their own (a key is set or operated on, not both).
        let ops = updates
            .keys()
            .enumerate()
            .map(|(n, key)| {
                let operation = match n % 3 {
                    0 => Operation::Remove,
                    1 => Operation::Increment(serde_json::Number::from(n)),
                    _ => Operation::Append { items: vec![serde_json::Value::from(n)], max: request_id },
                };
                (format!("op-{key}"), operation)
            })
            .filter(|(key, _)| !updates.contains_key(key))
            .collect();
        let if_version = request_id.map(|id| id / 2);
        let update = ClientMessage::UpdateState(UpdateState { updates, request_id, ops, if_version });
        prop_assert_eq!(ClientMessage::from_json(&update.to_json()).unwrap(), update);
    }

    #[test]
    fn any_text_is_decoded_or_refused_never_a_panic(text in "\\PC{0,64}", value in json()) {
        let _ = ClientMessage::from_json(&text);
        let _ = ServerMessage::from_json(&text);
        let envelope = serde_json::json!({"type": 3, "data": value}).to_string();
        let _ = ClientMessage::from_json(&envelope);
        let _ = ServerMessage::from_json(&envelope);
    }
}

/// Found by `client_messages_survive_a_round_trip`: without serde_json's
/// `float_roundtrip` a number could come back one unit off in its last digit.
#[test]
fn a_float_crosses_the_wire_unchanged() {
    let text = r#"{"type":3,"data":{"updates":{"a":-993681626.6332604}}}"#;
    let ClientMessage::UpdateState(update) = ClientMessage::from_json(text).unwrap() else {
        panic!()
    };
    assert_eq!(update.updates["a"].to_string(), "-993681626.6332604");
}
