//! The arguments of `updateState`, `append`, `increment` and `removeKey`, checked and
//! turned into an [`Update`], and the argument of `setPresence`. A wrong argument is a
//! `TypeError` with reason `"invalid"`, which the update methods return as a rejected
//! promise (the way a refused update fails), never as a throw; `setPresence`, which
//! returns nothing, throws it.

use serde_json::{Number, Value};
use state_sync_protocol::{JsonObject, Update};
use wasm_bindgen::JsValue;

use crate::convert::{object_from_js, parse, type_error};

/// The largest integer a JavaScript number holds exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A property of an options argument (`undefined` or `null`: absent). The options
/// themselves may be `undefined` or `null`, else they must be an object.
fn option(options: &JsValue, name: &str, method: &str) -> Result<Option<JsValue>, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    if !options.is_object() {
        return Err(type_error(&format!(
            "{method}: options must be an object, got {}",
            js_type(options)
        )));
    }
    let value = js_sys::Reflect::get(options, &name.into()).unwrap_or(JsValue::UNDEFINED);
    Ok((!value.is_undefined() && !value.is_null()).then_some(value))
}

/// A non-negative integer option (`ifVersion`, `max`).
fn count(options: &JsValue, name: &str, method: &str) -> Result<Option<u64>, JsValue> {
    let Some(value) = option(options, name, method)? else {
        return Ok(None);
    };
    match value.as_f64() {
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= MAX_SAFE_INTEGER => Ok(Some(n as u64)),
        _ => Err(type_error(&format!(
            "{method}: {name} must be a non-negative integer, got {}",
            describe(&value)
        ))),
    }
}

/// The key argument: a string.
fn key(key: &JsValue, method: &str) -> Result<String, JsValue> {
    key.as_string().ok_or_else(|| {
        type_error(&format!(
            "{method}: the key must be a string, got {}",
            js_type(key)
        ))
    })
}

/// `typeof value`, with `null` and arrays told apart.
fn js_type(value: &JsValue) -> String {
    if value.is_null() {
        "null".to_owned()
    } else if js_sys::Array::is_array(value) {
        "an array".to_owned()
    } else {
        value.js_typeof().as_string().unwrap_or_default()
    }
}

/// A short description of a wrong value: its type, and a number's value.
fn describe(value: &JsValue) -> String {
    match value.as_f64() {
        Some(n) if n.is_nan() => "NaN".to_owned(),
        Some(n) if n.is_infinite() => if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned(),
        Some(n) => format!("{n}"),
        None => js_type(value),
    }
}

/// `updateState(updates, { ifVersion })`: the updates as an [`Update`], conditional
/// when `ifVersion` is given.
pub(crate) fn update_state(updates: JsValue, options: &JsValue) -> Result<Update, JsValue> {
    let if_version = count(options, "ifVersion", "updateState")?;
    let updates = object_from_js(updates).map_err(|message| type_error(&message))?;
    let update = Update::from(updates);
    Ok(match if_version {
        Some(version) => update.if_version(version),
        None => update,
    })
}

/// The options of a functional `updateState`: none apply (it is conditional on the
/// version it was computed from already), so `ifVersion` is refused.
pub(crate) fn functional_options(options: &JsValue) -> Result<(), JsValue> {
    match option(options, "ifVersion", "updateState")? {
        Some(_) => Err(type_error(
            "updateState: ifVersion cannot be given with a function: a functional update is \
             conditional on the version it was computed from already",
        )),
        None => Ok(()),
    }
}

/// `append(key, items, { max })`.
pub(crate) fn append(
    key_value: &JsValue,
    items: JsValue,
    options: &JsValue,
) -> Result<Update, JsValue> {
    let key = key(key_value, "append")?;
    if !js_sys::Array::is_array(&items) {
        return Err(type_error(&format!(
            "append: the items must be an array, got {}",
            js_type(&items)
        )));
    }
    let max = count(options, "max", "append")?;
    let items = match parse(items) {
        Ok(Value::Array(items)) => items,
        Ok(_) => return Err(type_error("append: the items must be an array")),
        Err(error) => {
            return Err(type_error(&format!(
                "append: the items must be plain JSON data: {error}"
            )));
        }
    };
    Ok(match max {
        Some(max) => Update::new().append_capped(key, items, max),
        None => Update::new().append(key, items),
    })
}

/// `increment(key, by = 1)`.
pub(crate) fn increment(key_value: &JsValue, by: &JsValue) -> Result<Update, JsValue> {
    let key = key(key_value, "increment")?;
    let by = if by.is_undefined() {
        1.0
    } else {
        match by.as_f64() {
            Some(by) if by.is_finite() => by,
            _ => {
                return Err(type_error(&format!(
                    "increment: the amount must be a finite number, got {}",
                    describe(by)
                )));
            }
        }
    };
    Ok(Update::new().increment(key, number(by)))
}

/// A JavaScript number as JSON: an integer when it is one (so that the server adds
/// integers exactly), else a float.
fn number(n: f64) -> Number {
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        Number::from(n as i64)
    } else {
        // Finite (checked by the caller): from_f64 only refuses NaN and infinities.
        Number::from_f64(n).unwrap_or_else(|| Number::from(0))
    }
}

/// `removeKey(key)`.
pub(crate) fn remove_key(key_value: &JsValue) -> Result<Update, JsValue> {
    Ok(Update::new().remove_key(key(key_value, "removeKey")?))
}

/// `setPresence(presence)`: a plain object, as JSON.
pub(crate) fn presence(presence: JsValue) -> Result<JsonObject, JsValue> {
    let wrong = |kind: &str| {
        type_error(&format!(
            "setPresence: the presence must be an object, got {kind}"
        ))
    };
    if !presence.is_object() || js_sys::Array::is_array(&presence) {
        return Err(wrong(&js_type(&presence)));
    }
    match parse(presence) {
        Ok(Value::Object(presence)) => Ok(presence),
        // An object whose toJSON gives something else (a Date gives a string).
        Ok(other) => Err(wrong(&format!(
            "{} as JSON",
            state_sync_protocol::json_kind(&other)
        ))),
        Err(error) => Err(type_error(&format!(
            "setPresence: the presence must be plain JSON data: {error}"
        ))),
    }
}
