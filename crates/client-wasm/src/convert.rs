//! JSON values across the JavaScript boundary.

use serde::Serialize;
use serde_json::Value;
use state_sync_protocol::{JsonObject, UpdateFailure};
use wasm_bindgen::{JsCast, JsValue};

/// A JSON value as a plain JavaScript value (objects, not `Map`s).
pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> JsValue {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap_or(JsValue::UNDEFINED)
}

/// A JavaScript object as a JSON object; the error says what it was instead.
pub(crate) fn object_from_js(value: JsValue) -> Result<JsonObject, String> {
    match serde_wasm_bindgen::from_value::<Value>(value) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(format!(
            "updates must be an object, got {}",
            kind_of(&other)
        )),
        Err(error) => Err(format!("updates must be plain JSON data: {error}")),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JavaScript `Error` with a `reason` property (`"vetoed"`, `"closed"`, …).
pub(crate) fn error(message: &str, reason: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    let _ = js_sys::Reflect::set(&error, &"reason".into(), &reason.into());
    error.unchecked_into()
}

/// The JavaScript error for a failed update.
pub(crate) fn update_error(failure: &UpdateFailure) -> JsValue {
    let reason = match failure {
        UpdateFailure::Rejected { reason, .. } => serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        UpdateFailure::Unconfirmed => "unconfirmed".to_owned(),
        UpdateFailure::Detached { .. } => "detached".to_owned(),
        UpdateFailure::Closed => "closed".to_owned(),
        _ => "other".to_owned(),
    };
    error(&failure.to_string(), &reason)
}
