//! Presence seen frame by frame: a raw client that asks for presence, and what it knows
//! of the others from the PRESENCE (11) and PRESENCE_CHANGED (12) it read.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{RawClient, Received};

/// Attaches a raw client asking for presence (`extra` is merged into the data);
/// returns the data of its PRESENCE (11). The 7, and a 12 or 13 before the 11, are
/// skipped; anything else fails the test.
pub async fn attach_watching(client: &mut RawClient, state: &str, extra: Value) -> Value {
    let mut data = json!({"stateIdentifier": state, "presence": {}});
    if let (Value::Object(data), Value::Object(extra)) = (&mut data, extra) {
        data.extend(extra);
    }
    client.send(json!({"type": 2, "data": data})).await;
    loop {
        let message = client.recv().await;
        if message["type"] == 11 {
            return message["data"].clone();
        }
        assert!(
            message["type"] == 7 || message["type"] == 13 || message["type"] == 12,
            "unexpected answer to an attach: {message}"
        );
    }
}

/// What a raw watcher knows of the others, from the 11 and 12 it read.
#[derive(Debug, Default)]
pub struct PresenceView {
    /// Its own entry id.
    pub own: String,
    /// The others' entries, by id.
    pub others: BTreeMap<String, Value>,
}

impl PresenceView {
    /// The view a PRESENCE's data gives.
    pub fn of(snapshot: &Value) -> PresenceView {
        let mut view = PresenceView {
            own: snapshot["self"].as_str().expect("self").to_owned(),
            others: BTreeMap::new(),
        };
        for entry in snapshot["others"].as_array().expect("others") {
            view.others
                .insert(entry["id"].as_str().expect("id").to_owned(), entry.clone());
        }
        view
    }

    /// Applies a PRESENCE_CHANGED's data as docs/protocol.md says a client must.
    pub fn apply(&mut self, changed: &Value) {
        for change in changed["changes"].as_array().expect("changes") {
            let id = change["id"].as_str().expect("id").to_owned();
            if id == self.own {
                continue;
            }
            match change["event"].as_str().expect("event") {
                "join" => {
                    self.others.insert(id, change.clone());
                }
                "update" => {
                    if let Some(entry) = self.others.get_mut(&id) {
                        entry["presence"] = change["presence"].clone();
                    }
                }
                "leave" => {
                    self.others.remove(&id);
                }
                other => panic!("unknown event {other}"),
            }
        }
    }

    /// The others' public identities.
    pub fn users(&self) -> Vec<Value> {
        self.others.values().map(|e| e["user"].clone()).collect()
    }
}

/// Reads frames for `window`, applying presence messages to `view`; returns the
/// PRESENCE_CHANGED data read.
pub async fn follow(
    client: &mut RawClient,
    view: &mut PresenceView,
    window: Duration,
) -> Vec<Value> {
    let mut changes = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(received) = tokio::time::timeout_at(deadline, client.next()).await {
        match received {
            Received::Json(message) if message["type"] == 12 => {
                view.apply(&message["data"]);
                changes.push(message["data"].clone());
            }
            Received::Json(message) if message["type"] == 11 => {
                *view = PresenceView::of(&message["data"]);
            }
            Received::Json(_) => {}
            Received::Closed(frame) => panic!("closed: {frame:?}"),
        }
    }
    changes
}
