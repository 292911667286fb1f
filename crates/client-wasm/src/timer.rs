//! The browser's `setTimeout`, for the client's two timers: the next reconnection and
//! the next presence send (see `driver`).

use std::cell::RefCell;
use std::rc::Weak;
use std::time::Duration;

use wasm_bindgen::prelude::*;

use crate::driver::{Effects, Inner, with_inner};

/// A scheduled call and the callback it holds. Dropping it cancels the call (when it
/// has not run yet) and frees the callback.
pub(crate) struct Timer {
    handle: i32,
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    /// Calls `f` on the client behind `this` after `delay` (once, if the client still
    /// exists then). `None` outside a window, where there is no timer to use.
    pub(crate) fn start(
        this: &Weak<RefCell<Inner>>,
        delay: Duration,
        f: impl FnOnce(&mut Inner, &mut Effects) + 'static,
    ) -> Option<Timer> {
        let this = this.clone();
        let mut f = Some(f);
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(f) = f.take() {
                with_inner(&this, f);
            }
        });
        let millis = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
        let handle = web_sys::window()?
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                millis,
            )
            .ok()?;
        Some(Timer {
            handle,
            _callback: callback,
        })
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            window.clear_timeout_with_handle(self.handle);
        }
    }
}
