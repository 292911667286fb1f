//! Concurrent writers in the browser client, in real headless Chromium against the real
//! server: atomic operations, conditional updates and functional updates.
//!
//! Run like `browser.rs` (see there), against `browser-test-server`, which may have
//! served earlier runs: every test starts from what the server has.

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::{connected, function, get, json, recorder, rejection, resolved, sleep, stringify};
use js_sys::{Array, Function, Promise};
use state_sync_client_wasm::Client;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const NONE: JsValue = JsValue::UNDEFINED;

async fn attached(identifier: &str, state: &str) -> Client {
    let client = connected(identifier, None).await;
    resolved(client.connect_to_state(state)).await;
    client
}

fn number(value: &JsValue, key: &str) -> f64 {
    get(value, key).as_f64().unwrap_or(0.0)
}

/// Waits (up to 2 s) until `client`'s local state passes `check`.
async fn until(client: &Client, check: impl Fn(&JsValue) -> bool) {
    for _ in 0..100 {
        if check(&client.get_state()) {
            return;
        }
        sleep(20).await;
    }
    panic!("the local state is {}", stringify(&client.get_state()));
}

/// The last `n` items of the array at `key`, as JSON text.
fn last(state: &JsValue, key: &str, n: u32) -> String {
    let array: Array = get(state, key).unchecked_into();
    let length = array.length();
    stringify(&array.slice(length.saturating_sub(n), length).into())
}

#[wasm_bindgen_test]
async fn append_increment_and_remove_key_round_trip() {
    // `quiet` has no listener (appends are applied to its copy in place), `watcher` has
    // one (they are copied for it): both copies must end up the same.
    let quiet = attached("ops-quiet", "ops").await;
    let watcher = attached("ops-watcher", "ops").await;
    let (listener, heard, _keep) = recorder();
    watcher.add_state_update_listener("all", listener, None);
    let unique = js_sys::Math::random();

    let applied = resolved(quiet.append(
        "items".into(),
        json(&format!(r#"[{{"n":{unique}}},"two"]"#)),
        NONE,
    ))
    .await;
    let items = format!(r#"[{{"n":{unique}}},"two"]"#);
    assert_eq!(last(&get(&applied, "updates"), "items", 2), items);
    assert_eq!(last(&quiet.get_state(), "items", 2), items);
    until(&watcher, |state| last(state, "items", 2) == items).await;
    // The listener hears the whole array, with the items appended.
    let appended = heard.borrow_mut().drain(..).collect::<Vec<_>>();
    let [heard_append] = appended.as_slice() else {
        panic!("one update: {appended:?}");
    };
    let (updates, _previous) = heard_append.split_once('|').unwrap();
    assert_eq!(last(&json(updates), "items", 2), items, "{heard_append}");

    // Capped: the oldest go.
    resolved(quiet.append("items".into(), json("[3]"), json(r#"{"max":2}"#))).await;
    assert_eq!(stringify(&get(&quiet.get_state(), "items")), r#"["two",3]"#);
    until(&watcher, |state| {
        stringify(&get(state, "items")) == r#"["two",3]"#
    })
    .await;

    let count = number(&quiet.get_state(), "count");
    resolved(quiet.increment("count".into(), NONE)).await;
    let applied = resolved(quiet.increment("count".into(), JsValue::from(41))).await;
    assert_eq!(number(&get(&applied, "updates"), "count"), count + 42.0);
    assert_eq!(number(&quiet.get_state(), "count"), count + 42.0);
    until(&watcher, |state| number(state, "count") == count + 42.0).await;

    // An operation that does not fit the key's value changes nothing.
    let version = quiet.state_version();
    let wrong = rejection(quiet.increment("title".into(), NONE)).await;
    assert_eq!(get(&wrong, "reason"), "invalidOperation");
    let wrong = rejection(quiet.append("title".into(), json("[1]"), NONE)).await;
    assert_eq!(get(&wrong, "reason"), "invalidOperation");
    assert_eq!(quiet.state_version(), version);

    // A removed key: gone from both copies; listeners hear it as null.
    resolved(quiet.update_state(json(r#"{"gone":"soon"}"#), NONE)).await;
    until(&watcher, |state| get(state, "gone") == "soon").await;
    heard.borrow_mut().clear();
    let applied = resolved(quiet.remove_key("gone".into())).await;
    assert_eq!(stringify(&get(&applied, "updates")), r#"{"gone":null}"#);
    assert_eq!(get(&quiet.get_state(), "gone"), JsValue::UNDEFINED);
    until(&watcher, |state| get(state, "gone").is_undefined()).await;
    assert_eq!(*heard.borrow(), [r#"{"gone":null}|{"gone":"soon"}"#]);
    assert_eq!(
        stringify(&quiet.get_state()),
        stringify(&watcher.get_state())
    );
    quiet.close();
    watcher.close();
}

#[wasm_bindgen_test]
async fn wrong_arguments_reject_with_a_type_error_and_reason_invalid() {
    let client = attached("ops-arguments", "ops").await;
    let version = client.state_version();
    let attempts = [
        client.append("items".into(), json(r#"{"not":"an array"}"#), NONE),
        client.append("items".into(), json("[1]"), json(r#"{"max":-1}"#)),
        client.append("items".into(), json("[1]"), json(r#"{"max":1.5}"#)),
        client.append(JsValue::from(7), json("[1]"), NONE),
        client.increment("count".into(), JsValue::from(f64::NAN)),
        client.increment("count".into(), JsValue::from("1")),
        client.remove_key(JsValue::NULL),
        client.update_state(json(r#"{"a":1}"#), json(r#"{"ifVersion":-3}"#)),
        client.update_state(json(r#"{"a":1}"#), JsValue::from("options")),
    ];
    for attempt in attempts {
        let error = rejection(attempt).await;
        assert!(error.is_instance_of::<js_sys::TypeError>(), "{error:?}");
        assert_eq!(get(&error, "reason"), "invalid");
        let message = get(&error, "message").as_string().unwrap();
        assert!(
            message.contains("must be"),
            "the message says what is expected: {message}"
        );
    }
    assert_eq!(client.state_version(), version, "nothing was sent");
    client.close();
}

#[wasm_bindgen_test]
async fn a_stale_conditional_update_is_a_conflict_and_changes_nothing() {
    let client = attached("conditional-client", "conditional").await;
    let version = client.state_version().unwrap();
    let title = format!("t-{}", js_sys::Math::random());
    let update = json(&format!(r#"{{"title":"{title}"}}"#));
    let options = json(&format!(r#"{{"ifVersion":{version}}}"#));
    let applied = resolved(client.update_state(update, options.clone())).await;
    assert_eq!(get(&applied, "version").as_f64(), Some(version + 1.0));

    // Computed from `version`, which is no longer the state's.
    let stale = rejection(client.update_state(json(r#"{"title":"stale"}"#), options)).await;
    assert_eq!(get(&stale, "reason"), "conflict");
    assert!(stale.is_instance_of::<js_sys::Error>());
    assert_eq!(get(&client.get_state(), "title"), title.as_str());
    assert_eq!(client.state_version(), Some(version + 1.0));
    // The server did not count it either: the next update is the very next version,
    // and a client attaching now finds the title the conflict did not overwrite.
    let next = resolved(client.update_state(json(r#"{"after":1}"#), NONE)).await;
    assert_eq!(get(&next, "version").as_f64(), Some(version + 2.0));
    let other = connected("conditional-other", None).await;
    let state = resolved(other.connect_to_state("conditional")).await;
    assert_eq!(get(&state, "title"), title.as_str());
    client.close();
    other.close();
}

#[wasm_bindgen_test]
async fn a_functional_update_computes_from_the_state_the_server_has() {
    let client = attached("functional-client", "functional").await;
    let writer = attached("functional-writer", "functional").await;
    let count = (1000.0 * js_sys::Math::random()).floor();
    // Another writer changes the state; `client` may not have heard of it yet when it
    // computes: then its conditional update conflicts, and it computes again.
    resolved(writer.update_state(json(&format!(r#"{{"count":{count},"title":"w"}}"#)), NONE)).await;
    let calls = Rc::new(Cell::new(0));
    let counted = Rc::clone(&calls);
    let (compute, _keep) = function(move |prev| {
        counted.set(counted.get() + 1);
        let seen = get(&prev, "title").as_string().unwrap_or_default();
        let count = number(&prev, "count");
        json(&format!(r#"{{"count":{},"seen":"{seen}"}}"#, count + 1.0))
    });
    let applied = resolved(client.update_state(compute.into(), NONE)).await;
    assert_eq!(
        stringify(&get(&applied, "updates")),
        format!(r#"{{"count":{},"seen":"w"}}"#, count + 1.0)
    );
    assert!((1..=2).contains(&calls.get()), "{} calls", calls.get());
    until(&writer, |state| number(state, "count") == count + 1.0).await;
    client.close();
    writer.close();
}

#[wasm_bindgen_test]
async fn a_functional_update_rejects_with_what_the_function_threw_or_returned_wrong() {
    let client = attached("functional-errors", "functional").await;
    let version = client.state_version();
    let throws = Function::new_with_args("prev", "throw new RangeError('boom')");
    let thrown = rejection(client.update_state(throws.into(), NONE)).await;
    assert!(
        thrown.is_instance_of::<js_sys::RangeError>(),
        "the very error"
    );
    assert_eq!(get(&thrown, "message"), "boom");

    let array = Function::new_with_args("prev", "return [prev.title]");
    let wrong = rejection(client.update_state(array.clone().into(), NONE)).await;
    assert_eq!(get(&wrong, "reason"), "invalid");
    let promise = Function::new_with_args("prev", "return Promise.resolve({ x: 1 })");
    let wrong = rejection(client.update_state(promise.into(), NONE)).await;
    assert_eq!(get(&wrong, "reason"), "invalid");
    let wrong = rejection(client.update_state(array.into(), json(r#"{"ifVersion":1}"#))).await;
    assert_eq!(get(&wrong, "reason"), "invalid");
    assert_eq!(client.state_version(), version, "nothing was sent");

    // A client attached to no state: the update cannot be sent.
    let detached = connected("functional-detached", None).await;
    let compute = Function::new_with_args("prev", "return { x: 1 }");
    let refused = rejection(detached.update_state(compute.into(), NONE)).await;
    assert_eq!(get(&refused, "reason"), "notAttached");
    client.close();
    detached.close();
}

#[wasm_bindgen_test]
async fn two_clients_doing_twenty_functional_increments_each_count_forty() {
    let a = attached("counter-a", "counter").await;
    let b = attached("counter-b", "counter").await;
    let start = number(&a.get_state(), "count");
    let increment = Function::new_with_args("prev", "return { count: (prev.count ?? 0) + 1 }");
    let a = Rc::new(a);
    let b = Rc::new(b);
    // Each client increments 20 times in a row; both at once.
    let runs: Array = [Rc::clone(&a), Rc::clone(&b)]
        .into_iter()
        .map(|client| {
            let increment = increment.clone();
            future_to_promise(async move {
                for _ in 0..20 {
                    JsFuture::from(client.update_state(increment.clone().into(), NONE)).await?;
                }
                Ok(JsValue::UNDEFINED)
            })
        })
        .collect();
    resolved(Promise::all(&runs)).await;
    let expected = start + 40.0;
    until(&a, |state| number(state, "count") == expected).await;
    until(&b, |state| number(state, "count") == expected).await;
    let fresh = connected("counter-fresh", None).await;
    let state = resolved(fresh.connect_to_state("counter")).await;
    assert_eq!(number(&state, "count"), expected);
    a.close();
    b.close();
    fresh.close();
}
