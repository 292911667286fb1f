//! A client's core fed whatever a server might send, line by line, between its own
//! operations: it never panics, and what it sends always decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use state_sync_protocol::{ClientCore, ClientMessage, Event};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut core = ClientCore::new("fuzz");
    let mut events = core.transport_up();
    events.extend(core.connect_to_state("s"));
    for (i, line) in text.lines().enumerate() {
        match i % 7 {
            3 => {
                let updates = json!({ "n": i }).as_object().cloned().unwrap_or_default();
                events.extend(core.update(updates).1);
            }
            5 => {
                events.extend(core.transport_down());
                events.extend(core.transport_up());
            }
            _ => {}
        }
        events.extend(core.on_text(line));
    }
    events.extend(core.close());
    for event in events {
        if let Event::Send(frame) = event {
            ClientMessage::from_json(&frame).expect("the core sends what a server reads");
        }
    }
});
