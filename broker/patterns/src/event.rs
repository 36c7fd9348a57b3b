//! What patterns are matched against: an event flattened once into leaf
//! values, each under its dotted path and sorted by path.
//!
//! Flattening follows EventBridge: nested objects become dotted paths
//! (`{"detail": {"temp": 3}}` is `detail.temp = 3`); an array adds no path
//! segment, so an array of leaves gives its path several values (`"tags":
//! ["a", "b"]` is `tags = "a"` and `tags = "b"`); empty objects and arrays
//! give nothing, so they do not "exist". Each value under an array of
//! objects remembers which element it came from (its *trail*), so that a
//! pattern never takes two of its fields from different elements of the
//! same array.

use std::fmt;

use serde_json::Value;

/// A leaf value of an event: what patterns test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Leaf<'a> {
    /// A string.
    String(&'a str),
    /// A number (JSON numbers, SNS `Number` attributes).
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// Where an array element sits: which array of the event (numbered as
/// flattening meets them) and which element of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Element {
    pub(crate) array: u32,
    pub(crate) index: u32,
}

/// A run of bytes in an event's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy)]
enum Stored {
    String(Span),
    Number(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    path: Span,
    value: Stored,
    /// Into `Event::trails`.
    trail: Span,
}

/// A flattened event. Build it with [`Event::from_json`],
/// [`Event::from_pairs`] or an [`EventBuilder`]; the fields are held in one
/// buffer, so building costs a few allocations whatever the event's size.
#[derive(Clone, Default)]
pub struct Event {
    /// The paths and string values, back to back.
    text: String,
    /// Sorted by path; values of one path keep their order.
    fields: Vec<Field>,
    /// The trails of all fields, back to back.
    trails: Vec<Element>,
}

impl Event {
    /// Flattens a JSON value; a non-object value is one field with the
    /// empty path.
    pub fn from_json(value: &Value) -> Event {
        let mut builder = EventBuilder::new();
        builder.json("", value);
        builder.build()
    }

    /// An event of the given leaf values, for envelopes and SNS message
    /// attributes. A path given several times has several values.
    pub fn from_pairs<'a, P: AsRef<str>>(pairs: impl IntoIterator<Item = (P, Leaf<'a>)>) -> Event {
        let mut builder = EventBuilder::new();
        for (path, leaf) in pairs {
            builder.leaf(path.as_ref(), leaf);
        }
        builder.build()
    }

    /// A builder, to mix envelope fields and JSON.
    pub fn builder() -> EventBuilder {
        EventBuilder::new()
    }

    /// How many leaf values the event has.
    #[inline]
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the event has no leaf values.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The leaf values with their paths, sorted by path.
    pub fn fields(&self) -> impl Iterator<Item = (&str, Leaf<'_>)> {
        (0..self.fields.len()).map(|i| (self.path(i), self.leaf(i)))
    }

    /// The values at `path`.
    pub fn values<'e>(&'e self, path: &str) -> impl Iterator<Item = Leaf<'e>> + 'e {
        self.at(path).map(|i| self.leaf(i))
    }

    #[inline]
    pub(crate) fn path(&self, i: usize) -> &str {
        let span = self.fields[i].path;
        &self.text[span.start..span.end]
    }

    #[inline]
    pub(crate) fn leaf(&self, i: usize) -> Leaf<'_> {
        match self.fields[i].value {
            Stored::String(span) => Leaf::String(&self.text[span.start..span.end]),
            Stored::Number(x) => Leaf::Number(x),
            Stored::Bool(b) => Leaf::Bool(b),
            Stored::Null => Leaf::Null,
        }
    }

    /// Whether fields `i` and `j` have the same path (cheap: fields of one
    /// path share their path's bytes).
    #[inline]
    pub(crate) fn same_path(&self, i: usize, j: usize) -> bool {
        self.fields[i].path == self.fields[j].path
    }

    #[inline]
    pub(crate) fn trail(&self, i: usize) -> &[Element] {
        let span = self.fields[i].trail;
        &self.trails[span.start..span.end]
    }

    /// The indices of the fields at `path`.
    pub(crate) fn at(&self, path: &str) -> std::ops::Range<usize> {
        let start = self.fields.partition_point(|f| self.span(f.path) < path);
        let end = start + self.fields[start..].partition_point(|f| self.span(f.path) == path);
        start..end
    }

    fn span(&self, span: Span) -> &str {
        &self.text[span.start..span.end]
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries((0..self.fields.len()).map(|i| (self.path(i), self.leaf(i), self.trail(i))))
            .finish()
    }
}

/// Whether two trails can stand in one match: they agree on the element
/// of every array both are in.
#[inline]
pub(crate) fn consistent(a: &[Element], b: &[Element]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].array.cmp(&b[j].array) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal if a[i].index != b[j].index => return false,
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    true
}

/// The elements of both trails (which must be [`consistent`]), sorted.
pub(crate) fn merge(a: &[Element], b: &[Element], out: &mut Vec<Element>) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j == b.len() || (i < a.len() && a[i].array <= b[j].array);
        if take_a {
            if j < b.len() && a[i].array == b[j].array {
                j += 1;
            }
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
}

/// Builds an [`Event`] from leaf values and JSON documents, each under a
/// path of its own.
#[derive(Debug, Default)]
pub struct EventBuilder {
    text: String,
    fields: Vec<Field>,
    trails: Vec<Element>,
    next_array: u32,
}

impl EventBuilder {
    /// An empty builder, with room for a typical small event (16 values,
    /// 512 bytes of paths and strings) so that building one rarely grows
    /// its buffers.
    pub fn new() -> EventBuilder {
        EventBuilder {
            text: String::with_capacity(512),
            fields: Vec::with_capacity(16),
            trails: Vec::new(),
            next_array: 0,
        }
    }

    /// Adds one value at `path` (a path added again gets another value).
    pub fn leaf(&mut self, path: &str, leaf: Leaf<'_>) -> &mut Self {
        self.push(path, leaf, &[]);
        self
    }

    /// Adds a string at `path`.
    pub fn string(&mut self, path: &str, value: &str) -> &mut Self {
        self.leaf(path, Leaf::String(value))
    }

    /// Adds a number at `path`.
    pub fn number(&mut self, path: &str, value: f64) -> &mut Self {
        self.leaf(path, Leaf::Number(value))
    }

    /// Flattens `value` under `path` (the empty path puts its fields at
    /// the top level).
    pub fn json(&mut self, path: &str, value: &Value) -> &mut Self {
        let mut path = path.to_owned();
        let mut trail = Vec::new();
        self.flatten(&mut path, value, &mut trail);
        self
    }

    /// The event, its fields sorted by path.
    pub fn build(mut self) -> Event {
        let text = &self.text;
        let path = |f: &Field| &text[f.path.start..f.path.end];
        if !self.fields.is_sorted_by(|a, b| path(a) <= path(b)) {
            self.fields.sort_by(|a, b| path(a).cmp(path(b)));
        }
        // Fields of one path point at the same bytes.
        for i in 1..self.fields.len() {
            if path(&self.fields[i]) == path(&self.fields[i - 1]) {
                self.fields[i].path = self.fields[i - 1].path;
            }
        }
        Event {
            text: self.text,
            fields: self.fields,
            trails: self.trails,
        }
    }

    fn flatten(&mut self, path: &mut String, value: &Value, trail: &mut Vec<Element>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    self.flatten(path, value, trail);
                    path.truncate(len);
                }
            }
            // Elements that hold no objects give values of one path, which
            // no pattern takes two of: they need no trail.
            Value::Array(items) if !items.iter().any(holds_object) => {
                for item in items {
                    self.flatten(path, item, trail);
                }
            }
            Value::Array(items) => {
                let array = self.next_array;
                self.next_array += 1;
                for (index, item) in items.iter().enumerate() {
                    trail.push(Element {
                        array,
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                    });
                    self.flatten(path, item, trail);
                    trail.pop();
                }
            }
            Value::String(s) => self.push(path, Leaf::String(s), trail),
            // serde_json's numbers are finite; a u64 past 2^53 rounds.
            Value::Number(n) => self.push(path, Leaf::Number(n.as_f64().unwrap_or(0.0)), trail),
            Value::Bool(b) => self.push(path, Leaf::Bool(*b), trail),
            Value::Null => self.push(path, Leaf::Null, trail),
        }
    }

    fn push(&mut self, path: &str, leaf: Leaf<'_>, trail: &[Element]) {
        let path = self.append(path);
        let value = match leaf {
            Leaf::String(s) => Stored::String(self.append(s)),
            Leaf::Number(x) => Stored::Number(x),
            Leaf::Bool(b) => Stored::Bool(b),
            Leaf::Null => Stored::Null,
        };
        let start = self.trails.len();
        self.trails.extend_from_slice(trail);
        self.fields.push(Field {
            path,
            value,
            trail: Span {
                start,
                end: self.trails.len(),
            },
        });
    }

    fn append(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span {
            start,
            end: self.text.len(),
        }
    }
}

fn holds_object(value: &Value) -> bool {
    match value {
        Value::Object(_) => true,
        Value::Array(items) => items.iter().any(holds_object),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(event: &Event) -> Vec<(String, String)> {
        event
            .fields()
            .map(|(p, v)| (p.to_owned(), format!("{v:?}")))
            .collect()
    }

    #[test]
    fn flattens_objects_and_leaf_arrays() {
        let event = Event::from_json(&json!({
            "source": "aws.ec2",
            "detail": {"state": "running", "c-count": 5, "ok": true, "none": null},
            "resources": ["r1", "r2"],
            "empty": {},
            "nothing": [],
        }));
        assert_eq!(
            pairs(&event),
            [
                ("detail.c-count", "Number(5.0)"),
                ("detail.none", "Null"),
                ("detail.ok", "Bool(true)"),
                ("detail.state", "String(\"running\")"),
                ("resources", "String(\"r1\")"),
                ("resources", "String(\"r2\")"),
                ("source", "String(\"aws.ec2\")"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert!((0..event.len()).all(|i| event.trail(i).is_empty()));
        assert_eq!(event.at("resources"), 4..6);
        assert_eq!(event.at("missing"), 4..4);
    }

    #[test]
    fn arrays_of_objects_keep_trails() {
        // The example from aws/event-ruler's README ("JSON Array Matching").
        let event = Event::from_json(&json!({
            "employees": [
                {"firstName": "John", "lastName": "Doe"},
                {"firstName": "Anna", "lastName": "Smith"},
            ]
        }));
        let anna = event
            .at("employees.firstName")
            .find(|&i| event.leaf(i) == Leaf::String("Anna"))
            .expect("Anna");
        let smith = event
            .at("employees.lastName")
            .find(|&i| event.leaf(i) == Leaf::String("Smith"))
            .expect("Smith");
        let doe = event
            .at("employees.lastName")
            .find(|&i| event.leaf(i) == Leaf::String("Doe"))
            .expect("Doe");
        assert!(consistent(event.trail(anna), event.trail(smith)));
        assert!(!consistent(event.trail(anna), event.trail(doe)));
    }

    #[test]
    fn merges_trails() {
        let e = |array, index| Element { array, index };
        let mut out = Vec::new();
        merge(&[e(0, 1), e(2, 0)], &[e(0, 1), e(1, 3)], &mut out);
        assert_eq!(out, [e(0, 1), e(1, 3), e(2, 0)]);
        assert!(consistent(&[e(0, 1)], &[e(1, 2)]));
        assert!(!consistent(&[e(0, 1), e(1, 2)], &[e(1, 3)]));
    }

    #[test]
    fn builder_mixes_pairs_and_json() {
        let mut builder = Event::builder();
        builder
            .string("topic", "a/b")
            .number("n", 2.0)
            .json("payload", &json!({"t": 1}))
            .json("raw", &json!("text"));
        let event = builder.build();
        assert_eq!(
            event.fields().map(|(p, _)| p).collect::<Vec<_>>(),
            ["n", "payload.t", "raw", "topic"]
        );
        let event = Event::from_pairs([("a", Leaf::Bool(true)), ("a", Leaf::Null)]);
        assert_eq!(
            event.values("a").collect::<Vec<_>>(),
            [Leaf::Bool(true), Leaf::Null]
        );
    }
}
