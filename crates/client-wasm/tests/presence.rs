//! Presence in real headless Chromium against the real server (run as `browser.rs` is:
//! see there): who else is attached to a state, and what they set.
//!
//! The test server has no state of its own for presence: these tests share `api` with
//! `browser.rs` (suites and their tests run one at a time), and each test tells its own
//! clients apart by identifiers that end with a suffix of its own, ignoring any other
//! entry.

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{connected, get, json, resolved, sleep, stringify};
use js_sys::{Function, Object};
use state_sync_client_wasm::Client;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const STATE: &str = "api";

/// A suffix for the identifiers of one test.
fn run() -> String {
    format!("{}", (js_sys::Math::random() * 1e9) as u64)
}

/// A client of this test (`name-run`), attached to [`STATE`], once it has heard who
/// else is there (so that a listener added then hears only what comes after).
async fn attached(name: &str, run: &str) -> Client {
    let client = connected(&format!("{name}-{run}"), None).await;
    resolved(client.connect_to_state(STATE)).await;
    for _ in 0..500 {
        if client.get_presence_id().is_some() {
            return client;
        }
        sleep(10).await;
    }
    panic!("{name}-{run} never heard who else is present");
}

/// What a presence listener heard, as text: `synced [a, b]`, `joined b {}`,
/// `updated b {"typing":true}`, `left b {...}`; only this test's clients, by the
/// name they were given.
struct Log {
    heard: Rc<RefCell<Vec<String>>>,
    /// The `others` of the last call.
    last_others: Rc<RefCell<JsValue>>,
    function: Function,
    _listener: Closure<dyn FnMut(JsValue, JsValue)>,
}

impl Log {
    fn heard(&self) -> Vec<String> {
        self.heard.borrow().clone()
    }

    /// Waits until the listener heard `line` (5 s at most).
    async fn until(&self, line: &str) {
        for _ in 0..500 {
            if self.heard.borrow().iter().any(|heard| heard == line) {
                return;
            }
            sleep(10).await;
        }
        panic!("never heard {line:?}; heard {:?}", self.heard());
    }
}

/// The name a test gave the client of `entry` (`None` for other tests' clients).
fn name_of(entry: &JsValue, run: &str) -> Option<String> {
    let user = get(entry, "user").as_string()?;
    user.strip_suffix(&format!("-{run}")).map(str::to_owned)
}

/// This test's entries of `others`, as `name presence`.
fn mine(others: &JsValue, run: &str) -> Vec<String> {
    js_sys::Array::from(others)
        .iter()
        .filter_map(|entry| {
            let name = name_of(&entry, run)?;
            Some(format!("{name} {}", stringify(&get(&entry, "presence"))))
        })
        .collect()
}

/// Listens to `client`'s presence changes.
fn log(client: &Client, run: &str) -> Log {
    let heard = Rc::new(RefCell::new(Vec::new()));
    let last_others = Rc::new(RefCell::new(JsValue::UNDEFINED));
    let (sink, last, run) = (Rc::clone(&heard), Rc::clone(&last_others), run.to_owned());
    let listener =
        Closure::<dyn FnMut(JsValue, JsValue)>::new(move |others: JsValue, change: JsValue| {
            let kind = get(&change, "type").as_string().unwrap();
            *last.borrow_mut() = others.clone();
            let line = if kind == "synced" {
                assert!(get(&change, "entry").is_undefined());
                let names: Vec<String> = js_sys::Array::from(&others)
                    .iter()
                    .filter_map(|entry| name_of(&entry, &run))
                    .collect();
                format!("synced [{}]", names.join(", "))
            } else {
                let entry = get(&change, "entry");
                let Some(name) = name_of(&entry, &run) else {
                    return;
                };
                format!("{kind} {name} {}", stringify(&get(&entry, "presence")))
            };
            sink.borrow_mut().push(line);
        });
    let function: Function = listener.as_ref().clone().unchecked_into();
    client.add_presence_listener(function.clone());
    Log {
        heard,
        last_others,
        function,
        _listener: listener,
    }
}

/// Waits until `client`'s others (this test's) are `expected` (5 s at most).
async fn others_become(client: &Client, run: &str, expected: &[&str]) {
    for _ in 0..500 {
        if mine(&client.get_others(), run) == expected {
            return;
        }
        sleep(10).await;
    }
    assert_eq!(mine(&client.get_others(), run), expected);
}

fn is_frozen(value: &JsValue) -> bool {
    Object::is_frozen(value.unchecked_ref::<Object>())
}

/// The entry of `others` with this id.
fn entry_with_id(others: &JsValue, id: &str) -> Option<JsValue> {
    js_sys::Array::from(others)
        .iter()
        .find(|entry| get(entry, "id").as_string().as_deref() == Some(id))
}

#[wasm_bindgen_test]
async fn three_clients_see_joins_presence_changes_and_leaves_in_order() {
    let run = run();
    let a = attached("a", &run).await;
    let heard_by_a = log(&a, &run);
    let b = connected(&format!("b-{run}"), None).await;
    // Set before attaching: it comes with the attach.
    b.set_presence(json(r#"{"typing":false}"#)).unwrap();
    resolved(b.connect_to_state(STATE)).await;
    heard_by_a.until(r#"joined b {"typing":false}"#).await;
    let c = attached("c", &run).await;
    let heard_by_c = log(&c, &run);
    heard_by_a.until("joined c {}").await;

    b.set_presence(json(r#"{"typing":true}"#)).unwrap();
    heard_by_a.until(r#"updated b {"typing":true}"#).await;
    heard_by_c.until(r#"updated b {"typing":true}"#).await;
    b.close();
    heard_by_a.until(r#"left b {"typing":true}"#).await;
    heard_by_c.until(r#"left b {"typing":true}"#).await;

    assert_eq!(
        heard_by_a.heard(),
        [
            r#"joined b {"typing":false}"#,
            "joined c {}",
            r#"updated b {"typing":true}"#,
            r#"left b {"typing":true}"#,
        ],
        "in the order it happened"
    );
    // C's listener came after its attach, so it starts with the changes.
    assert_eq!(
        heard_by_c.heard(),
        [r#"updated b {"typing":true}"#, r#"left b {"typing":true}"#]
    );
    assert_eq!(mine(&a.get_others(), &run), ["c {}"]);
    assert_eq!(mine(&c.get_others(), &run), ["a {}"]);

    // The ids are the server's, and each client knows its own.
    let c_id = c.get_presence_id().expect("c knows its id");
    let c_seen_by_a = entry_with_id(&a.get_others(), &c_id).expect("a sees c by its id");
    assert_eq!(
        get(&c_seen_by_a, "user").as_string(),
        Some(format!("c-{run}"))
    );
    assert_ne!(a.get_presence_id(), Some(c_id));

    // A removed listener hears nothing more.
    assert!(a.remove_presence_listener(&heard_by_a.function));
    assert!(!a.remove_presence_listener(&heard_by_a.function));
    c.set_presence(json(r#"{"typing":true}"#)).unwrap();
    others_become(&a, &run, &[r#"c {"typing":true}"#]).await;
    assert_eq!(heard_by_a.heard().len(), 4);
    a.close();
    c.close();
}

#[wasm_bindgen_test]
async fn two_clients_with_the_same_identifier_are_two_entries() {
    let run = run();
    let observer = attached("observer", &run).await;
    let tab1 = attached("tab", &run).await;
    tab1.set_presence(json(r#"{"tab":1}"#)).unwrap();
    let tab2 = attached("tab", &run).await;
    tab2.set_presence(json(r#"{"tab":2}"#)).unwrap();

    others_become(&observer, &run, &[r#"tab {"tab":1}"#, r#"tab {"tab":2}"#]).await;
    let others = observer.get_others();
    let ids: Vec<String> = js_sys::Array::from(&others)
        .iter()
        .filter(|entry| name_of(entry, &run).as_deref() == Some("tab"))
        .map(|entry| get(&entry, "id").as_string().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    assert_eq!(tab1.get_presence_id().as_ref(), Some(&ids[0]));
    assert_eq!(tab2.get_presence_id().as_ref(), Some(&ids[1]));
    // Each tab sees the other one, not itself.
    others_become(&tab1, &run, &["observer {}", r#"tab {"tab":2}"#]).await;
    others_become(&tab2, &run, &["observer {}", r#"tab {"tab":1}"#]).await;

    // One tab closes: the other stays.
    tab1.close();
    others_become(&observer, &run, &[r#"tab {"tab":2}"#]).await;
    observer.close();
    tab2.close();
}

#[wasm_bindgen_test]
async fn set_presence_with_anything_but_an_object_throws_a_type_error() {
    let client = connected(&format!("wrong-{}", run()), None).await;
    let date: JsValue = js_sys::Date::new_0().into();
    let function = js_sys::Function::new_no_args("return 1");
    let cases: [(JsValue, &str); 7] = [
        (JsValue::from(5), "number"),
        (JsValue::from("typing"), "string"),
        (JsValue::NULL, "null"),
        (JsValue::UNDEFINED, "undefined"),
        (json("[1,2]"), "an array"),
        (function.into(), "function"),
        // An object whose JSON is not an object.
        (date, "a string as JSON"),
    ];
    for (value, kind) in cases {
        let error = client
            .set_presence(value.clone())
            .expect_err(&stringify(&value));
        assert!(error.is_instance_of::<js_sys::TypeError>());
        assert_eq!(get(&error, "reason"), "invalid");
        assert_eq!(
            get(&error, "message").as_string().unwrap(),
            format!("setPresence: the presence must be an object, got {kind}")
        );
    }
    let cyclic = json(r#"{"a":{}}"#);
    js_sys::Reflect::set(&get(&cyclic, "a"), &"back".into(), &cyclic).unwrap();
    let error = client.set_presence(cyclic).unwrap_err();
    assert!(
        get(&error, "message")
            .as_string()
            .unwrap()
            .starts_with("setPresence: the presence must be plain JSON data"),
    );
    assert_eq!(
        stringify(&client.get_my_presence()),
        "{}",
        "nothing was set"
    );

    // An object is set, and read back as the same frozen object until the next set.
    client
        .set_presence(json(r#"{"cursor":{"x":1,"y":2}}"#))
        .unwrap();
    let mine = client.get_my_presence();
    assert_eq!(stringify(&mine), r#"{"cursor":{"x":1,"y":2}}"#);
    assert!(Object::is(&mine, &client.get_my_presence()));
    assert!(is_frozen(&mine));
    assert!(is_frozen(&get(&mine, "cursor")));
    client.set_presence(json(r#"{"cursor":null}"#)).unwrap();
    assert_eq!(stringify(&client.get_my_presence()), r#"{"cursor":null}"#);
    client.close();
}

#[wasm_bindgen_test]
async fn a_presence_over_the_size_limit_is_reported_with_reason_too_large() {
    let run = run();
    let observer = attached("observer", &run).await;
    let heard = log(&observer, &run);
    let big = attached("big", &run).await;
    // Heard apart (the server sends the changes of 50 ms together, the latest winning).
    heard.until("joined big {}").await;
    big.set_presence(json(r#"{"status":"small"}"#)).unwrap();
    heard.until(r#"updated big {"status":"small"}"#).await;

    // 3,000 bytes of JSON, over the server's default 2,048.
    let error = big.on_error();
    sleep(60).await; // past the 50 ms between two sends: this one goes at once
    let text = "x".repeat(3000);
    big.set_presence(json(&format!(r#"{{"status":"{text}"}}"#)))
        .unwrap();
    let error = resolved(error).await;
    assert_eq!(get(&error, "reason"), "tooLarge");
    assert!(error.is_instance_of::<js_sys::Error>());
    assert!(!get(&error, "message").as_string().unwrap().is_empty());

    // The others still see the previous one, and the next presence goes through.
    big.set_presence(json(r#"{"status":"small again"}"#))
        .unwrap();
    heard.until(r#"updated big {"status":"small again"}"#).await;
    assert_eq!(
        heard.heard(),
        [
            "joined big {}",
            r#"updated big {"status":"small"}"#,
            r#"updated big {"status":"small again"}"#
        ]
    );
    observer.close();
    big.close();
}

#[wasm_bindgen_test]
async fn get_others_is_the_same_array_until_the_others_change() {
    let run = run();
    let a = attached("a", &run).await;
    let heard = log(&a, &run);
    let b = attached("b", &run).await;
    heard.until("joined b {}").await;
    let first = a.get_others();
    assert!(Object::is(&first, &a.get_others()), "the same array");
    assert!(
        Object::is(&first, &heard.last_others.borrow()),
        "the listener got that array"
    );
    assert!(is_frozen(&first));
    let b_id = b.get_presence_id().unwrap();
    let b_entry = entry_with_id(&first, &b_id).unwrap();
    assert!(is_frozen(&b_entry));
    assert!(is_frozen(&get(&b_entry, "presence")));

    // Somebody else joins: a new array, in which b's unchanged entry is the same object.
    let c = attached("c", &run).await;
    heard.until("joined c {}").await;
    let second = a.get_others();
    assert!(!Object::is(&first, &second));
    assert!(Object::is(&second, &a.get_others()));
    assert!(Object::is(
        &b_entry,
        &entry_with_id(&second, &b_id).unwrap()
    ));

    // b changes: its entry is a new object.
    b.set_presence(json(r#"{"away":true}"#)).unwrap();
    heard.until(r#"updated b {"away":true}"#).await;
    let third = a.get_others();
    let b_now = entry_with_id(&third, &b_id).unwrap();
    assert!(!Object::is(&b_entry, &b_now));
    assert_eq!(stringify(&get(&b_now, "presence")), r#"{"away":true}"#);
    a.close();
    b.close();
    c.close();
}

/// Records the SET_PRESENCE frames (type 4) this page's WebSockets send from now on
/// (through `WebSocket.prototype.send`), until `restore` is called.
fn record_presence_frames() -> JsValue {
    let install = Function::new_no_args(
        "const original = WebSocket.prototype.send;
         const sent = [];
         WebSocket.prototype.send = function (data) {
           if (typeof data === 'string' && data.startsWith('{\"type\":4,')) sent.push(data);
           return original.call(this, data);
         };
         return { sent, restore() { WebSocket.prototype.send = original; } };",
    );
    install.call0(&JsValue::NULL).unwrap()
}

#[wasm_bindgen_test]
async fn ten_changes_in_a_row_send_the_first_at_once_and_the_last_50_ms_later() {
    let run = run();
    let observer = attached("observer", &run).await;
    let busy = attached("busy", &run).await;
    others_become(&observer, &run, &["busy {}"]).await;
    let frames = record_presence_frames();
    for n in 1..=10 {
        busy.set_presence(json(&format!(r#"{{"n":{n}}}"#))).unwrap();
    }
    let sent = || -> Vec<String> {
        js_sys::Array::from(&get(&frames, "sent"))
            .iter()
            .map(|frame| frame.as_string().unwrap())
            .collect()
    };
    assert_eq!(sent(), [r#"{"type":4,"data":{"presence":{"n":1}}}"#]);
    others_become(&observer, &run, &[r#"busy {"n":10}"#]).await;
    sleep(150).await;
    assert_eq!(
        sent(),
        [
            r#"{"type":4,"data":{"presence":{"n":1}}}"#,
            r#"{"type":4,"data":{"presence":{"n":10}}}"#
        ],
        "the ones between were never sent"
    );
    let restore: Function = get(&frames, "restore").unchecked_into();
    restore.call0(&frames).unwrap();
    observer.close();
    busy.close();
}

#[wasm_bindgen_test]
async fn after_a_reconnect_the_client_is_present_again_with_its_latest_presence() {
    let run = run();
    let observer = attached("observer", &run).await;
    let options = r#"{"reconnect":{"initialDelayMs":20,"maxDelayMs":100}}"#;
    let roamer = connected(&format!("roamer-{run}"), Some(options)).await;
    resolved(roamer.connect_to_state(STATE)).await;
    roamer.set_presence(json(r#"{"at":"first"}"#)).unwrap();
    others_become(&observer, &run, &[r#"roamer {"at":"first"}"#]).await;

    // The server drops the roamer's connection (and vetoes this update); a presence
    // set meanwhile is sent with the re-attach.
    let _kick = roamer.update_state(json(r#"{"__disconnect":true}"#), JsValue::UNDEFINED);
    sleep(60).await;
    roamer.set_presence(json(r#"{"at":"second"}"#)).unwrap();
    others_become(&observer, &run, &[r#"roamer {"at":"second"}"#]).await;
    others_become(&roamer, &run, &["observer {}"]).await;
    assert_eq!(roamer.status(), "connected");

    // Closing empties the list of others.
    let heard = log(&roamer, &run);
    roamer.close();
    assert_eq!(heard.heard(), ["synced []"]);
    assert_eq!(js_sys::Array::from(&roamer.get_others()).length(), 0);
    observer.close();
}
