//! The browser client in real headless Chromium against the real server.
//!
//! Run by `scripts/test.sh`, which starts `browser-test-server` and passes its address
//! in `STATE_SYNC_TEST_URL` when building these tests:
//! `STATE_SYNC_TEST_URL=ws://127.0.0.1:PORT wasm-pack test --headless --chrome crates/client-wasm`.

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{connected, get, json, recorder, sleep, stringify, url};
use state_sync_client_wasm::Client;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn the_original_api_attach_update_listen() {
    let client = connected("api-client", None).await;
    assert_eq!(client.status(), "connected");
    let state = JsFuture::from(client.connect_to_state("api"))
        .await
        .unwrap();
    // The server may have served earlier runs: start from what it has.
    let title = stringify(&get(&state, "title"));
    let items_before = stringify(&get(&state, "items"));
    let unique = format!("new-{}", js_sys::Math::random());

    let (all, heard_all, _keep_all) = recorder();
    let (items, heard_items, _keep_items) = recorder();
    client.add_state_update_listener("all", all, None);
    client.add_state_update_listener("items", items, Some(vec!["items".into()]));

    let update = format!(r#"{{"title":"{unique}"}}"#);
    let applied = JsFuture::from(client.update_state(json(&update), JsValue::UNDEFINED))
        .await
        .unwrap();
    assert_eq!(stringify(&get(&applied, "updates")), update);
    assert!(get(&applied, "version").as_f64().unwrap() >= 1.0);
    assert_eq!(
        *heard_all.borrow(),
        [format!(r#"{update}|{{"title":{title}}}"#)],
        "previous values are the old ones"
    );
    assert!(heard_items.borrow().is_empty(), "filtered out");
    assert_eq!(
        stringify(&get(&client.get_state(), "title")),
        format!("\"{unique}\"")
    );

    assert!(client.remove_state_update_listener("all"));
    let new_items = format!(r#"{{"items":[{}]}}"#, js_sys::Math::random());
    JsFuture::from(client.update_state(json(&new_items), JsValue::UNDEFINED))
        .await
        .unwrap();
    assert_eq!(heard_all.borrow().len(), 1);
    assert_eq!(
        *heard_items.borrow(),
        [format!(r#"{new_items}|{{"items":{items_before}}}"#)]
    );
    client.close();
}

#[wasm_bindgen_test]
async fn a_vetoed_or_invalid_update_rejects_with_a_reason() {
    let client = connected("veto-client", None).await;
    JsFuture::from(client.connect_to_state("veto"))
        .await
        .unwrap();
    let vetoed =
        JsFuture::from(client.update_state(json(r#"{"forbidden":1}"#), JsValue::UNDEFINED))
            .await
            .unwrap_err();
    assert_eq!(get(&vetoed, "reason"), "vetoed");
    assert!(vetoed.is_instance_of::<js_sys::Error>());
    let invalid = JsFuture::from(client.update_state(json("[1,2]"), JsValue::UNDEFINED))
        .await
        .unwrap_err();
    assert_eq!(get(&invalid, "reason"), "invalid");
    let missing = JsFuture::from(client.connect_to_state("no-such-state"))
        .await
        .unwrap_err();
    assert_eq!(get(&missing, "reason"), "attachFailed");
    assert!(Client::new("http://nope".into(), "x", None, JsValue::UNDEFINED).is_err());
    client.close();
}

#[wasm_bindgen_test]
async fn two_clients_converge() {
    let a = connected("converge-a", None).await;
    let b = connected("converge-b", None).await;
    JsFuture::from(a.connect_to_state("converge"))
        .await
        .unwrap();
    JsFuture::from(b.connect_to_state("converge"))
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..20 {
        pending.push(JsFuture::from(a.update_state(
            json(&format!(r#"{{"a":{i},"shared":"a{i}"}}"#)),
            JsValue::UNDEFINED,
        )));
        pending.push(JsFuture::from(b.update_state(
            json(&format!(r#"{{"b":{i},"shared":"b{i}"}}"#)),
            JsValue::UNDEFINED,
        )));
    }
    for update in pending {
        update.await.unwrap();
    }
    for _ in 0..100 {
        if stringify(&a.get_state()) == stringify(&b.get_state()) {
            break;
        }
        sleep(20).await;
    }
    assert_eq!(stringify(&a.get_state()), stringify(&b.get_state()));
    assert_eq!(get(&a.get_state(), "a").as_f64(), Some(19.0));
    assert_eq!(get(&a.get_state(), "b").as_f64(), Some(19.0));
    a.close();
    b.close();
}

#[wasm_bindgen_test]
async fn after_the_server_drops_it_the_client_reconnects_and_nothing_is_lost() {
    let options = r#"{"reconnect":{"initialDelayMs":20,"maxDelayMs":100}}"#;
    let client = connected("reconnect-client", Some(options)).await;
    JsFuture::from(client.connect_to_state("reconnect"))
        .await
        .unwrap();
    let (status_listener, statuses, _keep) = recorder();
    client.add_status_listener("s", status_listener);

    // The server drops this client's connection; updates sent right after must still
    // be applied exactly once.
    let _kick = client.update_state(json(r#"{"__disconnect":true}"#), JsValue::UNDEFINED);
    let mut pending = Vec::new();
    for i in 0..10 {
        pending.push(JsFuture::from(
            client.update_state(json(&format!(r#"{{"n":{i}}}"#)), JsValue::UNDEFINED),
        ));
    }
    for update in pending {
        update.await.unwrap();
    }
    assert_eq!(get(&client.get_state(), "n").as_f64(), Some(9.0));
    let seen = statuses.borrow().join(",");
    assert!(
        seen.contains("reconnecting") && seen.ends_with("\"connected\"|undefined"),
        "{seen}"
    );
    assert_eq!(client.status(), "connected");
    client.close();
}

#[wasm_bindgen_test]
async fn closing_settles_pending_updates() {
    let client = connected("close-client", None).await;
    JsFuture::from(client.connect_to_state("close"))
        .await
        .unwrap();
    let pending = JsFuture::from(client.update_state(json(r#"{"late":true}"#), JsValue::UNDEFINED));
    client.close();
    let error = pending.await.unwrap_err();
    // It was sent before the close: the server may have applied it, and the error says so.
    assert_eq!(get(&error, "reason"), "unconfirmed");
    assert_eq!(client.status(), "closed");
    let after = JsFuture::from(client.update_state(json(r#"{"x":1}"#), JsValue::UNDEFINED))
        .await
        .unwrap_err();
    assert_eq!(get(&after, "reason"), "closed");
}

#[wasm_bindgen_test]
async fn a_refused_connection_is_reported_once_and_again_on_giving_up() {
    // The server refuses this token with HTTP 401; the browser shows only a close
    // (code 1006) before `open`, the same as for a server that is down.
    let options = json(r#"{"reconnect":{"initialDelayMs":20,"maxAttempts":2}}"#);
    let client = Client::new(
        url().into(),
        "refused-client",
        Some("refused".into()),
        options,
    )
    .unwrap();
    let heard = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = Rc::clone(&heard);
    let listener = Closure::<dyn FnMut(JsValue)>::new(move |error: JsValue| {
        let message = get(&error, "message").as_string().unwrap_or_default();
        sink.borrow_mut().push(message);
    });
    client.add_error_listener("e", listener.as_ref().clone().unchecked_into());
    let first = JsFuture::from(client.on_error()).await.unwrap();
    assert_eq!(get(&first, "reason"), "connect");
    let endpoint = url().trim_end_matches('/').to_owned();
    let message = get(&first, "message").as_string().unwrap();
    assert_eq!(
        message,
        format!(
            "could not open a connection to {endpoint}/ (refused or unreachable; the browser does \
             not say which)"
        ),
        "no token in it"
    );
    let connection = JsFuture::from(client.on_connection()).await.unwrap_err();
    assert_eq!(get(&connection, "reason"), "closed");
    assert_eq!(client.status(), "closed");
    let heard = heard.borrow();
    assert_eq!(heard.len(), 2, "the first failure and giving up: {heard:?}");
    assert!(
        heard[1].contains("gave up reconnecting after 2 attempts: could not open a connection"),
        "{}",
        heard[1]
    );
}

#[wasm_bindgen_test]
async fn a_server_that_drops_every_connection_gets_growing_delays_and_one_error() {
    // The server upgrades this client's connections and drops each at once.
    let options = json(r#"{"reconnect":{"initialDelayMs":50,"multiplier":2,"jitter":0}}"#);
    let client = Client::new(
        url().into(),
        "dropped-client",
        Some("dropped".into()),
        options,
    )
    .unwrap();
    let (status_listener, statuses, _keep) = recorder();
    client.add_status_listener("s", status_listener);
    let errors = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = Rc::clone(&errors);
    let listener = Closure::<dyn FnMut(JsValue)>::new(move |error: JsValue| {
        let message = get(&error, "message").as_string().unwrap_or_default();
        sink.borrow_mut().push(message);
    });
    client.add_error_listener("e", listener.as_ref().clone().unchecked_into());
    sleep(2000).await;
    // Connections at about 0, 70, 190, 410, 830 and 1650 ms; starting the backoff over
    // on every opened connection made it one every 70 ms.
    let connections = statuses
        .borrow()
        .iter()
        .filter(|status| status.starts_with("\"connected\""))
        .count();
    assert!(
        (2..=6).contains(&connections),
        "{connections} connections in 2 s"
    );
    let errors = errors.borrow();
    assert_eq!(errors.len(), 1, "once, not on every attempt: {errors:?}");
    assert!(
        errors[0].starts_with("the server closed the connection before answering (close code "),
        "{}",
        errors[0]
    );
    client.close();
}
