//! The event id: a name for a callback derived from its content, so that the
//! same callback sent again (a CSS retry, possibly re-signed with a new `t`)
//! gets the same id and can be recognised as a duplicate.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Fields that change between deliveries of the same callback.
const VOLATILE_FIELDS: [&str; 2] = ["sign", "t"];

/// Hex SHA-256 (first 128 bits) of the callback's canonical JSON without
/// `sign` and `t`. Canonical means object keys sorted at every depth, so the
/// id does not depend on the order fields arrive in; numbers keep their
/// received text.
pub fn event_id(fields: &Map<String, Value>) -> String {
    let mut canonical = Vec::with_capacity(512);
    write_object(
        &mut canonical,
        fields
            .iter()
            .filter(|(key, _)| !VOLATILE_FIELDS.contains(&key.as_str())),
    );
    let digest = Sha256::digest(&canonical);
    hex::encode(&digest[..16])
}

fn write_object<'a>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    let mut entries: Vec<_> = entries.collect();
    // Keys of one object are distinct, so an unstable sort gives the same
    // order as a stable one, without the stable sort's scratch buffer.
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (index, (key, value)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_canonical(out, value);
    }
    out.push(b'}');
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    // JSON string escaping, so keys and values cannot be confused. Writing
    // a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_object(out, map.iter()),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        // Scalars have exactly one serialisation (numbers keep their received text).
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(value: Value) -> String {
        match value {
            Value::Object(map) => event_id(&map),
            _ => unreachable!("tests pass objects"),
        }
    }

    #[test]
    fn sign_and_t_do_not_change_the_id() {
        let a = id(json!({"event_type": 100, "file_id": "f1", "t": 1, "sign": "aa"}));
        let b = id(json!({"event_type": 100, "file_id": "f1", "t": 2, "sign": "bb"}));
        let c = id(json!({"event_type": 100, "file_id": "f1"}));
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn field_order_does_not_change_the_id_at_any_depth() {
        let a = id(json!({"a": 1, "b": {"x": 1, "y": [1, {"p": 1, "q": 2}]}}));
        let b = id(json!({"b": {"y": [1, {"q": 2, "p": 1}], "x": 1}, "a": 1}));
        assert_eq!(a, b);
    }

    #[test]
    fn any_other_change_changes_the_id() {
        let base = id(json!({"event_type": 100, "file_id": "f1", "file_size": 10}));
        for other in [
            json!({"event_type": 100, "file_id": "f2", "file_size": 10}),
            json!({"event_type": 100, "file_id": "f1", "file_size": "10"}),
            json!({"event_type": 100, "file_id": "f1", "file_size": 11}),
            json!({"event_type": 100, "file_id": "f1", "file_size": 10, "x": null}),
            json!({"event_type": 100, "file_id": "f1"}),
            json!({"event_type": 1, "file_id": "f1", "file_size": 10}),
        ] {
            assert_ne!(id(other.clone()), base, "{other}");
        }
    }

    #[test]
    fn keys_cannot_be_confused_with_values() {
        // Quoting keeps {"a":"b,c:d"} apart from {"a":"b","c":"d"}.
        assert_ne!(
            id(json!({"a": "b\",\"c\":\"d"})),
            id(json!({"a": "b", "c": "d"}))
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[ -~]{0,20}".prop_map(Value::from),
        ]
    }

    fn fields() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("[a-z_]{1,12}", scalar(), 1..12).prop_map(|map| {
            map.into_iter()
                .filter(|(key, _)| !VOLATILE_FIELDS.contains(&key.as_str()))
                .collect()
        })
    }

    proptest! {
        /// `sign` and `t` never change the id.
        #[test]
        fn the_id_ignores_sign_and_t(fields in fields(), sign in "[0-9a-f]{32}", t in any::<i64>()) {
            let mut signed = fields.clone();
            signed.insert("sign".to_owned(), sign.into());
            signed.insert("t".to_owned(), t.into());
            prop_assert_eq!(event_id(&signed), event_id(&fields));
        }

        /// Any other change — a value, a new field, a removed field — changes it.
        #[test]
        fn the_id_changes_with_any_other_field(
            fields in fields(),
            which in any::<prop::sample::Index>(),
            replacement in scalar(),
            extra in "[a-z]{13,16}",
        ) {
            prop_assume!(!fields.is_empty());
            let id = event_id(&fields);
            let key = which.get(&fields.keys().cloned().collect::<Vec<_>>()).clone();
            if fields[&key] != replacement {
                let mut changed = fields.clone();
                changed.insert(key.clone(), replacement);
                prop_assert_ne!(event_id(&changed), id.clone());
            }
            let mut added = fields.clone();
            added.insert(extra, Value::Null);
            prop_assert_ne!(event_id(&added), id.clone());
            let mut removed = fields.clone();
            removed.shift_remove(&key);
            prop_assert_ne!(event_id(&removed), id);
        }
    }
}
