//! A browser client given several endpoints, in real headless Chromium against the real
//! server (run as `browser.rs` is: see there).
//!
//! The endpoint that refuses connections is the test server's port on `127.0.0.2`: the
//! server listens on `127.0.0.1` only, so nothing answers there (no fixed port).

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{get, json, recorder, resolved, url};
use js_sys::Array;
use state_sync_client_wasm::Client;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const FAST: &str = r#"{"reconnect":{"initialDelayMs":20,"maxDelayMs":100,"jitter":0}}"#;

/// The test server's endpoint on an address where nothing listens.
fn refusing() -> String {
    let url = url();
    assert!(
        url.starts_with("ws://127.0.0.1:"),
        "the test server must listen on 127.0.0.1 only: {url}"
    );
    url.replacen("127.0.0.1", "127.0.0.2", 1)
}

fn list(endpoints: &[&JsValue]) -> JsValue {
    endpoints.iter().copied().collect::<Array>().into()
}

/// Messages heard, in order.
type Heard = Rc<RefCell<Vec<String>>>;

/// The messages of the errors the client reports, as they come, and the listener to
/// keep alive.
fn errors_of(client: &Client) -> (Heard, Closure<dyn FnMut(JsValue)>) {
    let heard = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = Rc::clone(&heard);
    let listener = Closure::<dyn FnMut(JsValue)>::new(move |error: JsValue| {
        let message = get(&error, "message").as_string().unwrap_or_default();
        sink.borrow_mut().push(message);
    });
    client.add_error_listener("e", listener.as_ref().clone().unchecked_into());
    (heard, listener)
}

/// What the client reports when it could not open a connection to `endpoint`.
fn not_opened(endpoint: &str) -> String {
    format!(
        "could not open a connection to {}/ (refused or unreachable; the browser does not say \
         which)",
        endpoint.trim_end_matches('/')
    )
}

#[wasm_bindgen_test]
async fn when_the_first_endpoint_refuses_the_client_attaches_through_the_second() {
    let endpoints = list(&[&refusing().into(), &url().into()]);
    let client = Client::new(
        endpoints,
        "failover-first",
        Some("token".into()),
        json(FAST),
    )
    .unwrap();
    let (errors, _keep) = errors_of(&client);
    resolved(client.on_connection()).await;
    assert_eq!(
        *errors.borrow(),
        [not_opened(&refusing())],
        "the first endpoint was tried first"
    );
    let state = resolved(client.connect_to_state("reconnect")).await;
    assert!(get(&state, "title").is_string());
    let value = js_sys::Math::random();
    let applied = resolved(client.update_state(
        json(&format!(r#"{{"failover":{value}}}"#)),
        JsValue::UNDEFINED,
    ))
    .await;
    assert!(get(&applied, "version").as_f64().unwrap() >= 1.0);
    assert_eq!(get(&client.get_state(), "failover").as_f64(), Some(value));
    client.close();
}

#[wasm_bindgen_test]
async fn after_a_lost_connection_the_next_endpoint_is_tried_then_the_first_again() {
    let endpoints = list(&[&url().into(), &refusing().into()]);
    let client = Client::new(
        endpoints,
        "failover-round",
        Some("token".into()),
        json(FAST),
    )
    .unwrap();
    resolved(client.on_connection()).await;
    resolved(client.connect_to_state("reconnect")).await;
    let (errors, _keep) = errors_of(&client);
    let (status_listener, statuses, _keep_statuses) = recorder();
    client.add_status_listener("s", status_listener);

    // The server drops this client's connection; the next endpoint refuses it, and the
    // first one takes it back. Updates sent meanwhile are applied exactly once.
    let _kick = client.update_state(json(r#"{"__disconnect":true}"#), JsValue::UNDEFINED);
    let mut pending = Vec::new();
    for i in 0..10 {
        pending.push(client.update_state(json(&format!(r#"{{"m":{i}}}"#)), JsValue::UNDEFINED));
    }
    let mut versions = Vec::new();
    for update in pending {
        versions.push(get(&resolved(update).await, "version").as_f64().unwrap());
    }
    assert!(
        versions.windows(2).all(|pair| pair[1] == pair[0] + 1.0),
        "each applied once, in order: {versions:?}"
    );
    assert_eq!(get(&client.get_state(), "m").as_f64(), Some(9.0));
    let seen = statuses.borrow().join(",");
    // Once per loss: the kick may be run again when its update is resent before the
    // server recorded its outcome, and the client then goes round once more.
    let errors = errors.borrow();
    assert!(
        !errors.is_empty() && errors.iter().all(|error| *error == not_opened(&refusing())),
        "the second endpoint was tried after the loss: {errors:?} (statuses {seen})"
    );
    assert!(
        seen.contains("reconnecting") && seen.ends_with("\"connected\"|undefined"),
        "{seen}"
    );
    client.close();
}

#[wasm_bindgen_test]
fn a_bad_endpoint_in_the_list_or_an_empty_list_is_refused() {
    let refused = |endpoint: JsValue| -> String {
        match Client::new(endpoint, "failover-bad", None, JsValue::UNDEFINED) {
            Ok(client) => {
                client.close();
                panic!("not refused");
            }
            Err(error) => {
                let error = JsValue::from(error);
                assert!(error.is_instance_of::<js_sys::Error>());
                get(&error, "message").as_string().unwrap()
            }
        }
    };
    assert_eq!(
        refused(list(&[&url().into(), &"http://10.0.0.2:5000".into()])),
        r#"invalid endpoint "http://10.0.0.2:5000": it must start with ws:// or wss://"#,
        "the error a single bad endpoint gets, though the first one is fine"
    );
    assert_eq!(
        refused(list(&[])),
        r#"invalid endpoint "": no endpoint given (the list of endpoints is empty)"#
    );
    assert_eq!(
        refused(list(&[&url().into(), &JsValue::from(42)])),
        "invalid endpoint 42: it must start with ws:// or wss://"
    );
    assert_eq!(
        refused(JsValue::from(42)),
        "invalid endpoint 42: it must start with ws:// or wss://",
        "neither a string nor an array"
    );
    assert_eq!(
        refused("ws://h:port".into()),
        r#"invalid endpoint "ws://h:port": the port must be a number from 0 to 65535"#,
        "one endpoint, as before"
    );
}
