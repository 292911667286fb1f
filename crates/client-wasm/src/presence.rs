//! Presence as JavaScript sees it: `getOthers()`, `getMyPresence()` and the presence
//! listeners. What is present is the core's ([`ClientCore::others`]); this file only
//! turns it into JavaScript values, and keeps them the same objects until something
//! changes.
//!
//! Why the caching: React's `useSyncExternalStore` calls `getOthers()` on every render
//! and renders again whenever it returns another object, so it must return the same
//! array until a presence event changes it. The array is rebuilt on the first call
//! after such an event, and an entry that did not change keeps its object in the new
//! array (so `React.memo` on an entry holds). Everything handed out is frozen, all the
//! way down: a caller that changed a cached entry would change it for everyone.
//!
//! Listeners are called after each batch of changes (what one frame from the server
//! brought), once per change, with `(others, change)`: `others` is the array
//! `getOthers()` returns after the whole batch, `change` is
//! `{type: "synced" | "joined" | "updated" | "left", entry}` (no `entry` for
//! `"synced"`, which replaced the whole list: on attach, re-attach, or leaving the
//! state).

use js_sys::{Array, Function, Object};
use state_sync_protocol::{ClientCore, JsonObject, PresenceEntry, PresenceEvent};
use wasm_bindgen::{JsCast, JsValue};

use crate::convert::to_js;
use crate::driver::Effects;

/// The JavaScript side of presence, owned by the client's state (`driver::Inner`).
#[derive(Default)]
pub(crate) struct PresenceView {
    /// What `getOthers()` returns; `None` after a change, until it is built again.
    others: Option<JsValue>,
    /// The entries of the last array built, with their JavaScript objects, in order.
    /// (A list, not a map: tens of entries, and a map's hashing costs the package
    /// several KB.)
    entries: Vec<(PresenceEntry, JsValue)>,
    /// What `getMyPresence()` returns; `None` after `setPresence`.
    mine: Option<JsValue>,
    /// The presence listeners, in the order they were added (each once).
    listeners: Vec<Function>,
}

impl PresenceView {
    /// The others, as `getOthers()` returns them: the same array until they change.
    pub(crate) fn others(&mut self, core: &ClientCore) -> JsValue {
        if let Some(others) = &self.others {
            return others.clone();
        }
        let mut entries = Vec::with_capacity(core.others().len());
        let array = Array::new();
        for entry in core.others() {
            let object = match self.object_of(entry) {
                Some(object) => object,
                None => frozen(to_js(entry)),
            };
            array.push(&object);
            entries.push((entry.clone(), object));
        }
        self.entries = entries;
        let others: JsValue = Object::freeze(&array).into();
        self.others = Some(others.clone());
        others
    }

    /// The object of the last array built for this entry, if it is the same there.
    fn object_of(&self, entry: &PresenceEntry) -> Option<JsValue> {
        self.entries
            .iter()
            .find(|(known, _)| known == entry)
            .map(|(_, object)| object.clone())
    }

    /// This client's presence, as `getMyPresence()` returns it: the same object until
    /// it is set again.
    pub(crate) fn mine(&mut self, mine: &JsonObject) -> JsValue {
        self.mine.get_or_insert_with(|| frozen(to_js(mine))).clone()
    }

    /// `setPresence` was called: `getMyPresence()` builds its object again.
    pub(crate) fn mine_changed(&mut self) {
        self.mine = None;
    }

    /// Adds a listener; `false` when it was there already (it is called once).
    pub(crate) fn add_listener(&mut self, listener: Function) -> bool {
        if self.listeners.contains(&listener) {
            return false;
        }
        self.listeners.push(listener);
        true
    }

    /// Removes a listener; `false` when it was not there.
    pub(crate) fn remove_listener(&mut self, listener: &Function) -> bool {
        let before = self.listeners.len();
        self.listeners.retain(|known| known != listener);
        self.listeners.len() != before
    }

    /// The core's presence events of one batch, in order: `getOthers()` changes, and
    /// the listeners hear each event.
    pub(crate) fn changed(
        &mut self,
        core: &ClientCore,
        events: Vec<PresenceEvent>,
        effects: &mut Effects,
    ) {
        if events.is_empty() {
            return;
        }
        self.others = None;
        if self.listeners.is_empty() {
            return;
        }
        let others = self.others(core);
        for event in events {
            let (kind, entry) = match event {
                PresenceEvent::Synced(_) => ("synced", None),
                PresenceEvent::Joined(entry) => ("joined", Some(entry)),
                PresenceEvent::Updated(entry) => ("updated", Some(entry)),
                PresenceEvent::Left(entry) => ("left", Some(entry)),
            };
            let change = Object::new();
            let _ = js_sys::Reflect::set(&change, &"type".into(), &kind.into());
            if let Some(entry) = entry {
                // The object in `others` when it is the entry as it is now.
                let object = self
                    .object_of(&entry)
                    .unwrap_or_else(|| frozen(to_js(&entry)));
                let _ = js_sys::Reflect::set(&change, &"entry".into(), &object);
            }
            let change: JsValue = Object::freeze(&change).into();
            for listener in &self.listeners {
                effects.push((listener.clone(), vec![others.clone(), change.clone()]));
            }
        }
    }
}

/// `value` frozen, and everything in it (plain JSON data: objects and arrays).
fn frozen(value: JsValue) -> JsValue {
    if let Some(object) = value.dyn_ref::<Object>() {
        for member in Object::values(object).iter() {
            frozen(member);
        }
        Object::freeze(object);
    }
    value
}
