//! Listeners registered under an identifier: the state-update listeners of both clients
//! (optionally filtered by property), and the browser client's error and status
//! listeners (no filter). The clients differ only in what a listener is: a Rust closure
//! or a JS function.

use crate::JsonObject;

/// The registered listeners of a client, in registration order.
///
/// Adding a listener with an identifier already present replaces it in place: it keeps
/// its place in the calling order (the original's behaviour, handy for React effects
/// that run again).
#[derive(Debug, Clone)]
pub struct Listeners<L> {
    entries: Vec<Entry<L>>,
}

#[derive(Debug, Clone)]
struct Entry<L> {
    id: String,
    properties: Vec<String>,
    listener: L,
}

impl<L> Default for Listeners<L> {
    fn default() -> Self {
        Listeners {
            entries: Vec::new(),
        }
    }
}

impl<L> Listeners<L> {
    /// No listeners.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a listener, or replaces the one with the same identifier. An empty
    /// `properties` hears every update; otherwise only updates that touch one of them.
    pub fn add(&mut self, id: impl Into<String>, properties: Vec<String>, listener: L) {
        let id = id.into();
        let entry = Entry {
            id,
            properties,
            listener,
        };
        match self.entries.iter_mut().find(|e| e.id == entry.id) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
    }

    /// Removes a listener; `false` when there was none with this identifier.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        self.entries.len() != before
    }

    /// How many listeners are registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no listener is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every listener, in calling order (for listeners registered without properties).
    pub fn iter(&self) -> impl Iterator<Item = &L> + '_ {
        self.entries.iter().map(|e| &e.listener)
    }

    /// The listeners that should hear an update with these keys.
    pub fn matching<'a>(&'a self, updates: &'a JsonObject) -> impl Iterator<Item = &'a L> + 'a {
        self.entries
            .iter()
            .filter(|e| {
                e.properties.is_empty() || e.properties.iter().any(|p| updates.contains_key(p))
            })
            .map(|e| &e.listener)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys(value: serde_json::Value) -> JsonObject {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn filters_replaces_and_removes() {
        let mut listeners = Listeners::new();
        listeners.add("all", vec![], 1);
        listeners.add("title", vec!["title".into()], 2);
        listeners.add("body", vec!["body".into(), "footer".into()], 3);
        let heard: Vec<_> = listeners
            .matching(&keys(json!({"title": 1})))
            .copied()
            .collect();
        assert_eq!(heard, [1, 2]);
        let heard: Vec<_> = listeners
            .matching(&keys(json!({"footer": 1, "x": 2})))
            .copied()
            .collect();
        assert_eq!(heard, [1, 3]);
        listeners.add("title", vec!["title".into()], 20);
        assert_eq!(listeners.len(), 3, "same id replaces");
        let heard: Vec<_> = listeners
            .matching(&keys(json!({"title": 1})))
            .copied()
            .collect();
        assert_eq!(heard, [1, 20]);
        assert!(listeners.remove("all"));
        assert!(!listeners.remove("all"));
        assert_eq!(listeners.matching(&keys(json!({"x": 1}))).count(), 0);
    }

    #[test]
    fn replacing_a_listener_keeps_its_place_in_the_calling_order() {
        // The browser client's error and status listeners: no property filter.
        let mut listeners = Listeners::new();
        listeners.add("first", vec![], "first");
        listeners.add("second", vec![], "second");
        listeners.add("third", vec![], "third");
        listeners.add("first", vec![], "first, replaced");
        let order: Vec<_> = listeners.iter().copied().collect();
        assert_eq!(order, ["first, replaced", "second", "third"]);
        let heard: Vec<_> = listeners
            .matching(&keys(json!({"any": 1})))
            .copied()
            .collect();
        assert_eq!(
            heard, order,
            "without properties a listener hears everything"
        );
    }

    #[test]
    fn a_removed_listener_is_gone_and_removal_says_whether_there_was_one() {
        let mut listeners = Listeners::new();
        listeners.add("a", vec![], 1);
        listeners.add("b", vec![], 2);
        assert!(listeners.remove("a"));
        assert!(!listeners.remove("a"), "already removed");
        assert!(!listeners.remove("never added"));
        assert_eq!(listeners.iter().copied().collect::<Vec<_>>(), [2]);
        listeners.add("a", vec![], 3);
        assert_eq!(
            listeners.iter().copied().collect::<Vec<_>>(),
            [2, 3],
            "added again after removal: at the end"
        );
    }
}
