//! Reading the fields of a callback leniently, for every typed view: a value
//! of the wrong type becomes a warning naming the field, never a rejection,
//! and the fields no view knows are listed so new ones get noticed.

use serde_json::{Map, Value};

use super::signature::parse_decimal_i64;

/// Fields of a callback that belong to the envelope rather than any view.
pub(crate) const ENVELOPE_FIELDS: [&str; 3] = ["event_type", "t", "sign"];

/// Reads fields of one object, collecting a warning for each value it cannot use.
pub(crate) struct FieldReader<'a> {
    fields: &'a Map<String, Value>,
    warnings: &'a mut Vec<String>,
    /// Names read so far, so the rest can be listed as unknown.
    known: Vec<&'static str>,
    /// Where this object sits in the callback (`abnormal_event[0].`), for warnings.
    prefix: String,
}

/// What a JSON value is, for warnings.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Null => "null",
    }
}

impl<'a> FieldReader<'a> {
    /// A reader of a callback's top level; the envelope fields count as known.
    pub(crate) fn new(fields: &'a Map<String, Value>, warnings: &'a mut Vec<String>) -> Self {
        Self {
            fields,
            warnings,
            known: ENVELOPE_FIELDS.to_vec(),
            prefix: String::new(),
        }
    }

    /// A reader of a nested object found at `path` (e.g. `items[2]`).
    fn nested<'b>(
        fields: &'b Map<String, Value>,
        warnings: &'b mut Vec<String>,
        path: String,
    ) -> FieldReader<'b> {
        FieldReader {
            fields,
            warnings,
            known: Vec::new(),
            prefix: format!("{path}."),
        }
    }

    /// The received fields not read so far, in the order received.
    pub(crate) fn unknown_fields(&self) -> Vec<String> {
        self.fields
            .keys()
            .filter(|key| !self.known.contains(&key.as_str()))
            .cloned()
            .collect()
    }

    fn mistyped(&mut self, name: &str, expected: &str, value: &Value) {
        let found = kind(value);
        self.warnings.push(format!(
            "field `{}{name}` should be {expected} but is {found}; kept as received",
            self.prefix
        ));
    }

    /// Pushes a warning about `name` in this object.
    pub(crate) fn warn(&mut self, name: &str, problem: &str) {
        self.warnings
            .push(format!("field `{}{name}` {problem}", self.prefix));
    }

    fn present(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.push(name);
        self.fields.get(name).filter(|value| !value.is_null())
    }

    /// Text; a number is taken as its decimal text (ids sent as numbers).
    pub(crate) fn string(&mut self, name: &'static str) -> Option<String> {
        match self.present(name)? {
            Value::String(text) => Some(text.clone()),
            // A number where text is documented (e.g. an id) is still that id.
            Value::Number(number) => Some(number.to_string()),
            other => {
                self.mistyped(name, "a string", other);
                None
            }
        }
    }

    /// Text from `name`, else from `alias` (a documented misspelling or other casing).
    pub(crate) fn string_or(&mut self, name: &'static str, alias: &'static str) -> Option<String> {
        let first = self.string(name);
        let second = self.string(alias);
        first.or(second)
    }

    /// An integer, from a JSON integer or a decimal string.
    pub(crate) fn int(&mut self, name: &'static str) -> Option<i64> {
        let value = self.present(name)?;
        let parsed = match value {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => parse_decimal_i64(text.trim()),
            _ => None,
        };
        if parsed.is_none() {
            self.mistyped(name, "an integer", value);
        }
        parsed
    }

    /// A non-negative integer, from a JSON integer or a string of digits.
    pub(crate) fn unsigned(&mut self, name: &'static str) -> Option<u64> {
        let value = self.present(name)?;
        let parsed = match value {
            Value::Number(number) => number.as_u64(),
            Value::String(text) if text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.mistyped(name, "a non-negative integer", value);
        }
        parsed
    }

    /// A non-negative integer from `name`, else from `alias`.
    pub(crate) fn unsigned_or(&mut self, name: &'static str, alias: &'static str) -> Option<u64> {
        let first = self.unsigned(name);
        let second = self.unsigned(alias);
        first.or(second)
    }

    /// A number with or without a fraction, from JSON or a decimal string.
    pub(crate) fn float(&mut self, name: &'static str) -> Option<f64> {
        let value = self.present(name)?;
        let parsed = match value {
            Value::Number(number) => number.as_f64(),
            Value::String(text) => text.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        };
        if parsed.is_none() {
            self.mistyped(name, "a number", value);
        }
        parsed
    }

    /// A boolean, from JSON, the strings `"true"`/`"false"` or the numbers 1/0.
    pub(crate) fn boolean(&mut self, name: &'static str) -> Option<bool> {
        let value = self.present(name)?;
        let parsed = match value {
            Value::Bool(flag) => Some(*flag),
            Value::String(text) => match text.trim() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            Value::Number(number) => match number.as_i64() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.mistyped(name, "a boolean", value);
        }
        parsed
    }

    /// An array kept as received (element shapes that are open-ended or unconfirmed).
    pub(crate) fn array(&mut self, name: &'static str) -> Option<Vec<Value>> {
        match self.present(name)? {
            Value::Array(items) => Some(items.clone()),
            other => {
                self.mistyped(name, "an array", other);
                None
            }
        }
    }

    /// An array of text; elements that are not text are dropped with a warning.
    pub(crate) fn strings(&mut self, name: &'static str) -> Option<Vec<String>> {
        let items = self.array(name)?;
        Some(self.texts_of(name, &items))
    }

    fn texts_of(&mut self, name: &str, items: &[Value]) -> Vec<String> {
        let mut texts = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(text) => texts.push(text.clone()),
                other => self.mistyped(&format!("{name}[{index}]"), "a string", other),
            }
        }
        texts
    }

    /// An array of integers; other elements are dropped with a warning.
    pub(crate) fn ints(&mut self, name: &'static str) -> Option<Vec<i64>> {
        let items = self.array(name)?;
        let mut numbers = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item.as_i64() {
                Some(number) => numbers.push(number),
                None => self.mistyped(&format!("{name}[{index}]"), "an integer", item),
            }
        }
        Some(numbers)
    }

    /// Numbers from an array, or a single number taken as a list of one;
    /// when `name` is absent, from `alias` (a documented misspelling).
    pub(crate) fn floats_or(
        &mut self,
        name: &'static str,
        alias: &'static str,
    ) -> Option<Vec<f64>> {
        let first = self.floats(name);
        let second = self.floats(alias);
        first.or(second)
    }

    fn floats(&mut self, name: &'static str) -> Option<Vec<f64>> {
        let value = self.present(name)?;
        match value {
            Value::Number(number) => number.as_f64().map(|f| vec![f]),
            Value::Array(items) => {
                let mut numbers = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    match item.as_f64() {
                        Some(number) => numbers.push(number),
                        None => self.mistyped(&format!("{name}[{index}]"), "a number", item),
                    }
                }
                Some(numbers)
            }
            other => {
                self.mistyped(name, "a number or an array of numbers", other);
                None
            }
        }
    }

    /// A JSON value serialized as a string, decoded (an object or array sent
    /// as such is taken as it is). The received text stays in the event.
    pub(crate) fn json_text(&mut self, name: &'static str) -> Option<Value> {
        match self.present(name)? {
            Value::String(text) if text.trim().is_empty() => None,
            Value::String(text) => match serde_json::from_str::<Value>(text) {
                Ok(parsed) => Some(parsed),
                Err(_) => {
                    self.warn(name, "is not valid JSON text; kept as received");
                    None
                }
            },
            Value::Object(object) => Some(Value::Object(object.clone())),
            Value::Array(items) => Some(Value::Array(items.clone())),
            other => {
                self.mistyped(name, "a JSON object serialized as a string", other);
                None
            }
        }
    }

    /// A JSON array of text serialized as a string (trailing newline and all), decoded.
    pub(crate) fn json_text_strings(&mut self, name: &'static str) -> Option<Vec<String>> {
        match self.json_text(name)? {
            Value::Array(items) => Some(self.texts_of(name, &items)),
            other => {
                self.mistyped(name, "a JSON array in a string", &other);
                None
            }
        }
    }

    /// A JSON object serialized as a string, decoded and read as `T`.
    pub(crate) fn json_text_object<T>(
        &mut self,
        name: &'static str,
        read: fn(&mut FieldReader<'_>) -> T,
    ) -> Option<T> {
        match self.json_text(name)? {
            Value::Object(object) => {
                let path = format!("{}{name}", self.prefix);
                Some(read(&mut FieldReader::nested(&object, self.warnings, path)))
            }
            other => {
                self.mistyped(name, "a JSON object in a string", &other);
                None
            }
        }
    }

    /// A nested object, read as `T`.
    pub(crate) fn object<T>(
        &mut self,
        name: &'static str,
        read: fn(&mut FieldReader<'_>) -> T,
    ) -> Option<T> {
        match self.present(name)? {
            Value::Object(object) => {
                let path = format!("{}{name}", self.prefix);
                Some(read(&mut FieldReader::nested(object, self.warnings, path)))
            }
            other => {
                self.mistyped(name, "an object", other);
                None
            }
        }
    }

    /// An array of objects, each read as `T`; elements that are not objects
    /// are dropped with a warning. A single object is taken as a list of one
    /// (a shape that is "object or array: unconfirmed").
    pub(crate) fn objects<T>(
        &mut self,
        name: &'static str,
        read: fn(&mut FieldReader<'_>) -> T,
    ) -> Option<Vec<T>> {
        let value = self.present(name)?;
        let items: Vec<&'a Value> = match value {
            Value::Array(items) => items.iter().collect(),
            Value::Object(_) => vec![value],
            other => {
                self.mistyped(name, "an array of objects", other);
                return None;
            }
        };
        let single = value.is_object();
        let mut read_items = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let path = if single {
                format!("{}{name}", self.prefix)
            } else {
                format!("{}{name}[{index}]", self.prefix)
            };
            match item {
                Value::Object(object) => {
                    read_items.push(read(&mut FieldReader::nested(object, self.warnings, path)));
                }
                other => {
                    let found = kind(other);
                    self.warnings.push(format!(
                        "field `{path}` should be an object but is {found}; kept as received"
                    ));
                }
            }
        }
        Some(read_items)
    }
}
