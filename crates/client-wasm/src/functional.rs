//! Functional updates: `updateState(prev => partial)`, the browser's side of the native
//! client's `update_state_with`, with the same rules.
//!
//! The function runs when the update can be sent (attached, after any resync), with the
//! state as a JavaScript object, and what it returns is sent conditionally on that
//! state's version. When another writer got there first (reason `conflict`), the update
//! waits for the newer local state, then a random delay of up to
//! 0.5 ms × 2^min(attempt, 8) (128 ms at most) that spreads writers who keep colliding,
//! and runs the function again: at most [`MAX_ATTEMPTS`] times, then it rejects with
//! reason `conflict`. Against the original server, which has no versions, what the
//! function returned is sent once, unconditionally. The promise settles once: with
//! `{updates, version}` as applied, with the error the function threw, or with the
//! update's failure.

use std::cell::RefCell;
use std::rc::Weak;

use js_sys::{Function, Promise};
use state_sync_protocol::{
    ConnectionStatus, MAX_ATTEMPTS, Update, conflict_spread_micros, gave_up_message,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::convert::{error, object_from_js, reason_of, to_js, type_error};
use crate::driver::{Inner, new_promise, submit, with_inner};

fn closed() -> JsValue {
    error("the client is closed", "closed")
}

/// Runs the functional update `compute` on the client behind `this`.
pub(crate) async fn run(this: Weak<RefCell<Inner>>, compute: Function) -> Result<JsValue, JsValue> {
    for attempt in 0..MAX_ATTEMPTS {
        wait_until(&this, |inner| {
            inner.core.is_attached() || inner.core.state_identifier().is_none()
        })
        .await?;
        let (state, version) = with_inner(&this, |inner, _| {
            let core = &inner.core;
            let version = core.version().filter(|_| !core.is_legacy_server());
            (to_js(core.state()), version)
        })
        .ok_or_else(closed)?;
        // Outside any borrow: the function may call the client. What it throws rejects.
        let partial = compute.call1(&JsValue::UNDEFINED, &state)?;
        if partial.is_instance_of::<Promise>() {
            return Err(type_error(
                "updateState: the function must return the updates, not a promise",
            ));
        }
        let updates = object_from_js(partial)
            .map_err(|message| type_error(&format!("updateState: the function's {message}")))?;
        let update = match version {
            Some(version) => Update::from(updates).if_version(version),
            None => Update::from(updates),
        };
        match JsFuture::from(submit(&this, update)).await {
            Err(failure) if version.is_some() && reason_of(&failure) == "conflict" => {
                // Wait for the newer state (or a resync), then a little more, at random.
                wait_until(&this, |inner| {
                    inner.core.version() != version || !inner.core.is_attached()
                })
                .await?;
                let spread_ms = conflict_spread_micros(attempt) as f64 / 1000.0;
                sleep((js_sys::Math::random() * spread_ms).round()).await;
            }
            outcome => return outcome,
        }
    }
    Err(error(&gave_up_message(), "conflict"))
}

/// Waits until `ready` holds for the client; rejects with reason `"closed"` when the
/// client is closed (or gone) first.
async fn wait_until(
    this: &Weak<RefCell<Inner>>,
    ready: impl Fn(&Inner) -> bool,
) -> Result<(), JsValue> {
    loop {
        let waiting = with_inner(this, |inner, _| {
            if ready(inner) {
                return Ok(None);
            }
            if inner.status == ConnectionStatus::Closed {
                return Err(closed());
            }
            Ok(Some(new_promise(|resolve, _| {
                inner.on_next_change(resolve)
            })))
        })
        .ok_or_else(closed)??;
        match waiting {
            None => return Ok(()),
            Some(change) => {
                JsFuture::from(change).await?;
            }
        }
    }
}

/// Resolves after `ms` milliseconds (a browser timer; at once outside a window).
async fn sleep(ms: f64) {
    let timer = new_promise(|resolve, _| {
        let millis = ms as i32;
        let scheduled = web_sys::window().map(|window| {
            window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, millis)
        });
        if !matches!(scheduled, Some(Ok(_))) {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = JsFuture::from(timer).await;
}
