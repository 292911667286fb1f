//! The constructor's endpoints (its first argument) and options (its fourth), as
//! JavaScript passes them.

use std::time::Duration;

use serde::Deserialize;
use state_sync_protocol::{Endpoint, ReconnectPolicy};
use wasm_bindgen::{JsCast, JsError, JsValue};

/// The constructor's first argument, one endpoint (a string) or several (an array of
/// strings), checked as the protocol crate checks them ([`Endpoint::parse_all`]): the
/// first one refused, or an empty array, is the error, with the native client's text.
/// A value that is not a string gets the error of an endpoint without `ws://`, as the
/// npm wrapper gives it.
pub(crate) fn endpoints(endpoint: &JsValue) -> Result<Vec<Endpoint>, JsError> {
    let text = |value: &JsValue| {
        value.as_string().ok_or_else(|| {
            let shown = js_sys::JSON::stringify(value)
                .ok()
                .and_then(|json| json.as_string())
                .or_else(|| value.js_typeof().as_string())
                .unwrap_or_default();
            JsError::new(&format!(
                "invalid endpoint {shown}: it must start with ws:// or wss://"
            ))
        })
    };
    let texts = match endpoint.dyn_ref::<js_sys::Array>() {
        Some(array) => array
            .iter()
            .map(|item| text(&item))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![text(endpoint)?],
    };
    Endpoint::parse_all(&texts).map_err(|e| JsError::new(&e.to_string()))
}

/// Options of the constructor's fourth argument.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Options {
    /// `false` to never reconnect, or the backoff settings.
    reconnect: Option<ReconnectOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ReconnectOptions {
    Enabled(bool),
    Policy {
        #[serde(rename = "initialDelayMs")]
        initial_delay_ms: Option<f64>,
        #[serde(rename = "maxDelayMs")]
        max_delay_ms: Option<f64>,
        multiplier: Option<f64>,
        jitter: Option<f64>,
        #[serde(rename = "maxAttempts")]
        max_attempts: Option<u32>,
    },
}

/// The reconnection policy that `options` (`undefined`, `null` or an object) asks for.
pub(crate) fn reconnect_policy(options: JsValue) -> Result<ReconnectPolicy, JsError> {
    let options: Options = if options.is_undefined() || options.is_null() {
        Options::default()
    } else {
        crate::convert::parse(options)
            .and_then(|value| serde_json::from_value(value).map_err(|e| e.to_string()))
            .map_err(|e| JsError::new(&format!("invalid options: {e}")))?
    };
    Ok(policy_from(options.reconnect))
}

fn policy_from(options: Option<ReconnectOptions>) -> ReconnectPolicy {
    let default = ReconnectPolicy::default();
    let millis = |ms: Option<f64>, fallback: Duration| {
        ms.map_or(fallback, |ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    };
    match options {
        None | Some(ReconnectOptions::Enabled(true)) => default,
        Some(ReconnectOptions::Enabled(false)) => ReconnectPolicy::disabled(),
        Some(ReconnectOptions::Policy {
            initial_delay_ms,
            max_delay_ms,
            multiplier,
            jitter,
            max_attempts,
        }) => ReconnectPolicy {
            enabled: true,
            initial: millis(initial_delay_ms, default.initial),
            max: millis(max_delay_ms, default.max),
            multiplier: multiplier.unwrap_or(default.multiplier),
            jitter: jitter.unwrap_or(default.jitter),
            max_attempts,
        },
    }
}
