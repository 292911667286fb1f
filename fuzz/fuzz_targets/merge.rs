//! Two JSON objects from the input: the merge rules hold for them (the same checks as
//! the property tests in `tests/tests/properties.rs`, on what the fuzzer finds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use state_sync_protocol::{JsonObject, apply_updates, diff, shallow_merge};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some((left, right)) = text.split_once('\u{1}') else {
        return;
    };
    let (Ok(Value::Object(state)), Ok(Value::Object(updates))) =
        (serde_json::from_str::<Value>(left), serde_json::from_str::<Value>(right))
    else {
        return;
    };
    let mut merged: JsonObject = state.clone();
    let merge = shallow_merge(&mut merged, &updates);
    for (key, value) in &merged {
        assert_eq!(Some(value), updates.get(key).or_else(|| state.get(key)));
    }
    for (key, previous) in &merge.previous {
        assert_eq!(Some(previous), state.get(key));
    }
    let mut applied = state.clone();
    apply_updates(&mut applied, &updates);
    assert_eq!(applied, merged);
    let changes = diff(&state, &merged);
    let mut patched = state.clone();
    apply_updates(&mut patched, &changes.updates);
    assert_eq!(patched, merged);
});
