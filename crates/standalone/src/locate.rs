//! Where a mistake is in the configuration file: from a position to the key written
//! there (serde's errors carry a position, not a key), and from a key to its line
//! (for mistakes found after reading, such as a certificate that cannot be read).
//! Both walk the document as the `toml` crate parsed it, with the position of every
//! key and value.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A mistake in the configuration file, naming the file, the line and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub(crate) file: PathBuf,
    /// 1-based line, when the mistake has a place in the file.
    pub(crate) line: Option<usize>,
    /// The key, as a path: `limits.max-connections`, `state[1].webhook.url`.
    pub(crate) key: Option<String>,
    pub(crate) message: String,
    /// The text of that line, shown under the message.
    pub(crate) excerpt: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration file {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key {key}")?;
        }
        write!(f, ": {}", self.message)?;
        if let (Some(line), Some(excerpt)) = (self.line, &self.excerpt) {
            write!(f, "\n{line:>6} | {excerpt}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One step of a key path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A mistake found after reading a section: the key (a path from the file's top) and
/// what is wrong with it. [`Locator::invalid`] puts it on its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) at: Vec<Step<'static>>,
    pub(crate) message: String,
}

impl Invalid {
    pub(crate) fn new(
        at: impl IntoIterator<Item = Step<'static>>,
        message: impl Into<String>,
    ) -> Self {
        Invalid {
            at: at.into_iter().collect(),
            message: message.into(),
        }
    }
}

/// Writes a key path as people read it: `state[1].webhook.url`.
pub(crate) fn key_path(steps: &[Step<'_>]) -> String {
    let mut path = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Step::Index(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

/// Builds errors about one file, whose text is `text`.
pub(crate) struct Locator<'t> {
    file: &'t Path,
    text: &'t str,
    document: Option<Spanned<DeTable<'t>>>,
}

impl<'t> Locator<'t> {
    pub(crate) fn new(file: &'t Path, text: &'t str) -> Self {
        Locator {
            file,
            text,
            document: DeTable::parse(text).ok(),
        }
    }

    /// An error at a position of the text (a `toml` error's span), naming the key there.
    pub(crate) fn at(&self, position: Option<Range<usize>>, message: String) -> ConfigError {
        let key = match (&self.document, &position) {
            (Some(document), Some(span)) => {
                let mut path = Vec::new();
                deepest(document.get_ref(), span.start, &mut path).then(|| path.join("."))
            }
            _ => None,
        };
        // serde names Rust's integer types; people read "an integer".
        let message = ["usize", "u64", "u32"]
            .iter()
            .fold(message, |message, rust| {
                message.replace(
                    &format!("expected {rust}"),
                    "expected a non-negative integer",
                )
            });
        self.error(position.map(|span| span.start), key, message)
    }

    /// An error about the key at `steps` (found after reading), on its line when the
    /// file has it.
    pub(crate) fn key(&self, steps: &[Step<'_>], message: impl Into<String>) -> ConfigError {
        let position = self
            .document
            .as_ref()
            .and_then(|document| find(document.get_ref(), steps));
        self.error(position, Some(key_path(steps)), message.into())
    }

    /// [`Locator::key`] for a mistake found by a section's own checks.
    pub(crate) fn invalid(&self, invalid: Invalid) -> ConfigError {
        self.key(&invalid.at, invalid.message)
    }

    fn error(&self, position: Option<usize>, key: Option<String>, message: String) -> ConfigError {
        let (line, excerpt) = match position {
            Some(offset) => {
                let offset = offset.min(self.text.len());
                let line = self.text[..offset].matches('\n').count() + 1;
                let excerpt = self.text.lines().nth(line - 1).map(str::to_owned);
                (Some(line), excerpt)
            }
            None => (None, None),
        };
        ConfigError {
            file: self.file.to_owned(),
            line,
            key,
            message,
            excerpt,
        }
    }

    /// An error about the file as a whole (it cannot be read).
    pub(crate) fn whole(file: &Path, message: String) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            line: None,
            key: None,
            message,
            excerpt: None,
        }
    }
}

/// Appends to `path` the deepest key whose name or value holds `offset`; false when
/// none does.
fn deepest(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if descend(value, offset, path)
            || key.span().contains(&offset)
            || value.span().contains(&offset)
        {
            return true;
        }
        path.pop();
    }
    false
}

fn descend(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<String>) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => deepest(table, offset, path),
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let Some(last) = path.last_mut() else {
                    return false;
                };
                let name = std::mem::take(last);
                *last = format!("{name}[{index}]");
                if descend(item, offset, path) || item.span().contains(&offset) {
                    return true;
                }
                if let Some(last) = path.last_mut() {
                    *last = name;
                }
            }
            false
        }
        _ => false,
    }
}

/// Where the key at `steps` is written.
fn find(table: &DeTable<'_>, steps: &[Step<'_>]) -> Option<usize> {
    let (Step::Key(name), rest) = steps.split_first()? else {
        return None;
    };
    let (key, value) = table.iter().find(|(key, _)| key.get_ref() == name)?;
    let mut value = value;
    let mut rest = rest;
    while let Some((Step::Index(index), tail)) = rest.split_first() {
        let DeValue::Array(items) = value.get_ref() else {
            return Some(key.span().start);
        };
        value = items.get(*index)?;
        rest = tail;
    }
    match (rest.is_empty(), value.get_ref()) {
        (true, _) => Some(key.span().start),
        (false, DeValue::Table(inner)) => find(inner, rest).or(Some(value.span().start)),
        (false, _) => Some(key.span().start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "addr = \"x\"\n\n[limits]\nmax-connections = \"many\"\n\n[[state]]\nid = \"a\"\n\n[[state]]\nid = \"b\"\nwebhook = { url = \"http://h/\", timeout = \"9s\" }\n";

    #[test]
    fn a_position_names_the_key_written_there() {
        let locator = Locator::new(Path::new("f.toml"), TEXT);
        let at = |needle: &str| {
            let start = TEXT.find(needle).unwrap_or(0);
            locator.at(Some(start..start + needle.len()), "m".into())
        };
        let error = at("\"many\"");
        assert_eq!(error.key.as_deref(), Some("limits.max-connections"));
        assert_eq!(error.line, Some(4));
        let error = at("\"9s\"");
        assert_eq!(error.key.as_deref(), Some("state[1].webhook.timeout"));
        assert_eq!(error.line, Some(11));
        assert_eq!(
            error.to_string(),
            "invalid configuration file f.toml, line 11, key state[1].webhook.timeout: m\n    11 | webhook = { url = \"http://h/\", timeout = \"9s\" }"
        );
    }

    #[test]
    fn a_key_is_found_on_its_line() {
        let locator = Locator::new(Path::new("f.toml"), TEXT);
        let steps = [
            Step::Key("state"),
            Step::Index(1),
            Step::Key("webhook"),
            Step::Key("timeout"),
        ];
        let error = locator.key(&steps, "too long");
        assert_eq!(error.line, Some(11));
        assert_eq!(error.key.as_deref(), Some("state[1].webhook.timeout"));
        let error = locator.key(&[Step::Key("state"), Step::Index(0), Step::Key("id")], "x");
        assert_eq!(error.line, Some(7));
        // A key the file does not have (a default) has no line.
        let error = locator.key(&[Step::Key("tls"), Step::Key("cert")], "x");
        assert_eq!(error.line, None);
        assert_eq!(error.key.as_deref(), Some("tls.cert"));
    }
}
