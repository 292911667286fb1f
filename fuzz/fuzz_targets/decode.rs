//! Any bytes as a client's or a server's frame: decoded or refused with a reply, never
//! a panic; what decodes encodes back to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use state_sync_protocol::{ClientMessage, ServerMessage};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match ClientMessage::from_json(&text) {
        Ok(message) => {
            let again = ClientMessage::from_json(&message.to_json()).expect("re-decodes");
            assert_eq!(again, message);
        }
        Err(error) => {
            let _ = error.into_reply().to_json();
        }
    }
    if let Ok(message) = ServerMessage::from_json(&text) {
        let again = ServerMessage::from_json(&message.to_json()).expect("re-decodes");
        assert_eq!(again, message);
    }
});
