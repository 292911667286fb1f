//! Helpers shared by the browser test suites.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Reflect};
use state_sync_client_wasm::Client;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

pub(crate) fn url() -> String {
    match option_env!("STATE_SYNC_TEST_URL") {
        Some(url) => url.to_owned(),
        None => panic!(
            "build these tests with STATE_SYNC_TEST_URL=ws://host:port of a running browser-test-server"
        ),
    }
}

pub(crate) fn json(text: &str) -> JsValue {
    js_sys::JSON::parse(text).unwrap()
}

pub(crate) fn stringify(value: &JsValue) -> String {
    if value.is_undefined() {
        return "undefined".to_owned();
    }
    js_sys::JSON::stringify(value)
        .ok()
        .and_then(|text| text.as_string())
        .unwrap_or_default()
}

pub(crate) fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &key.into()).unwrap()
}

pub(crate) async fn connected(identifier: &str, options: Option<&str>) -> Client {
    let options = options.map_or(JsValue::UNDEFINED, json);
    let client = Client::new(url().into(), identifier, Some("token".into()), options).unwrap();
    JsFuture::from(client.on_connection()).await.unwrap();
    client
}

/// A JS function, what it heard (its arguments as JSON text), and the closure to keep alive.
pub(crate) type Recorder = (
    Function,
    Rc<RefCell<Vec<String>>>,
    Closure<dyn FnMut(JsValue, JsValue)>,
);

/// A JS function that records its arguments (as JSON text).
pub(crate) fn recorder() -> Recorder {
    let heard = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&heard);
    let closure = Closure::<dyn FnMut(JsValue, JsValue)>::new(move |a: JsValue, b: JsValue| {
        let entry = format!("{}|{}", stringify(&a), stringify(&b));
        sink.borrow_mut().push(entry);
    });
    let function: Function = closure.as_ref().clone().unchecked_into();
    (function, heard, closure)
}

pub(crate) async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

/// A JS function of one argument backed by `f`, and the closure to keep alive.
pub(crate) fn function(
    f: impl FnMut(JsValue) -> JsValue + 'static,
) -> (Function, Closure<dyn FnMut(JsValue) -> JsValue>) {
    let closure = Closure::<dyn FnMut(JsValue) -> JsValue>::new(f);
    let function: Function = closure.as_ref().clone().unchecked_into();
    (function, closure)
}

/// The error a promise rejected with (panics when it resolved).
pub(crate) async fn rejection(promise: js_sys::Promise) -> JsValue {
    match JsFuture::from(promise).await {
        Ok(value) => panic!("resolved with {}", stringify(&value)),
        Err(error) => error,
    }
}

/// What a promise resolved with (panics, with the error's reason and message, when it
/// rejected).
pub(crate) async fn resolved(promise: js_sys::Promise) -> JsValue {
    match JsFuture::from(promise).await {
        Ok(value) => value,
        Err(error) => panic!(
            "rejected ({}): {}",
            stringify(&get(&error, "reason")),
            stringify(&get(&error, "message"))
        ),
    }
}
