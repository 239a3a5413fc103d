//! CSS event types by number and by name, and a selection of them (what a
//! sink receives, which types may arrive unsigned).
//!
//! Names exist for people (configuration, logs, metrics); the number is what
//! CSS sends and what the spool stores. A number nobody documented has no
//! name: in metrics and logs it is `other`, so a sender inventing numbers
//! cannot grow the label set without bound.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Every documented event type with its name, in number order.
pub const EVENT_TYPES: [(i64, &str); 18] = [
    (0, "push_end"),
    (1, "push_start"),
    (100, "record"),
    (200, "screenshot"),
    (314, "relay"),
    (315, "audio_audit"),
    (317, "image_audit"),
    (321, "push_exception"),
    (328, "stream_monitor"),
    (332, "record_status"),
    (338, "subtitles"),
    (341, "record_exception"),
    (343, "quality_control"),
    (344, "assessment_threshold"),
    (345, "assessment_average"),
    (347, "erase"),
    (348, "live_summary"),
    (349, "highlight"),
];

/// The label of every event type without a name.
pub const OTHER_EVENT_TYPE: &str = "other";

/// The name of a documented event type; `None` for any other number.
pub fn event_type_name(event_type: i64) -> Option<&'static str> {
    EVENT_TYPES
        .iter()
        .find(|(number, _)| *number == event_type)
        .map(|(_, name)| *name)
}

/// The name of `event_type` for a metric label or a log field: its name, or
/// [`OTHER_EVENT_TYPE`] (a bounded set whatever is received).
pub fn event_type_label(event_type: i64) -> &'static str {
    event_type_name(event_type).unwrap_or(OTHER_EVENT_TYPE)
}

/// The number of a documented event type's name.
pub fn event_type_by_name(name: &str) -> Option<i64> {
    EVENT_TYPES
        .iter()
        .find(|(_, known)| *known == name)
        .map(|(number, _)| *number)
}

/// A set of event types: every type, or those listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypes {
    /// Every event type, documented or not (`"*"` in the configuration).
    All,
    /// Only these numbers.
    Only(Vec<i64>),
}

impl Default for EventTypes {
    fn default() -> Self {
        Self::Only(Vec::new())
    }
}

impl From<Vec<i64>> for EventTypes {
    fn from(types: Vec<i64>) -> Self {
        Self::Only(types)
    }
}

impl EventTypes {
    /// Whether `event_type` is in the set.
    pub fn contains(&self, event_type: i64) -> bool {
        match self {
            Self::All => true,
            Self::Only(types) => types.contains(&event_type),
        }
    }

    /// Whether the set holds no type at all.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Only(types) if types.is_empty())
    }

    /// The listed numbers; `None` for [`EventTypes::All`].
    pub fn listed(&self) -> Option<&[i64]> {
        match self {
            Self::All => None,
            Self::Only(types) => Some(types),
        }
    }

    /// Parses one item of a configured list: `"*"`, a name, or a decimal
    /// number. An unknown name is refused with the list of valid ones.
    pub fn parse_item(item: &str) -> Result<Option<i64>, String> {
        let item = item.trim();
        if item == "*" {
            return Ok(None);
        }
        if let Some(number) = super::signature::parse_decimal_i64(item) {
            return Ok(Some(number));
        }
        event_type_by_name(item).map(Some).ok_or_else(|| {
            let valid: Vec<&str> = EVENT_TYPES.iter().map(|(_, name)| *name).collect();
            format!(
                "unknown event type `{item}`; valid names are: {}, or \"*\" for every type, or a number",
                valid.join(", ")
            )
        })
    }

    /// Builds the set from parsed items; any `"*"` (a `None` item) makes it [`EventTypes::All`].
    fn from_items(items: Vec<Option<i64>>) -> Self {
        if items.iter().any(Option::is_none) {
            return Self::All;
        }
        let mut types: Vec<i64> = items.into_iter().flatten().collect();
        types.dedup();
        Self::Only(types)
    }
}

/// Written as a list of names (numbers where a type has none), or `["*"]`.
impl Serialize for EventTypes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Item {
            Name(&'static str),
            Number(i64),
        }
        match self {
            Self::All => serializer.collect_seq(["*"]),
            Self::Only(types) => {
                serializer.collect_seq(types.iter().map(|&number| {
                    event_type_name(number).map_or(Item::Number(number), Item::Name)
                }))
            }
        }
    }
}

/// Read from a list whose items are numbers, names or `"*"`, or from one
/// comma-separated string (the form an environment variable gives).
impl<'de> Deserialize<'de> for EventTypes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemsVisitor;

        impl<'de> Visitor<'de> for ItemsVisitor {
            type Value = EventTypes;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a list of event type numbers or names, or \"*\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<EventTypes, E> {
                let items = text
                    .split(',')
                    .filter(|item| !item.trim().is_empty())
                    .map(EventTypes::parse_item)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(E::custom)?;
                Ok(EventTypes::from_items(items))
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<EventTypes, E> {
                Ok(EventTypes::Only(vec![number]))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<EventTypes, E> {
                i64::try_from(number)
                    .map(|number| EventTypes::Only(vec![number]))
                    .map_err(|_| E::custom(format!("event type {number} is out of range")))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventTypes, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Item>()? {
                    items.push(item.0);
                }
                Ok(EventTypes::from_items(items))
            }
        }

        deserializer.deserialize_any(ItemsVisitor)
    }
}

/// One item of a configured list: `None` is `"*"`.
struct Item(Option<i64>);

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;

        impl Visitor<'_> for ItemVisitor {
            type Value = Item;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an event type number or name, or \"*\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Item, E> {
                EventTypes::parse_item(text).map(Item).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Item, E> {
                Ok(Item(Some(number)))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Item, E> {
                i64::try_from(number)
                    .map(|number| Item(Some(number)))
                    .map_err(|_| E::custom(format!("event type {number} is out of range")))
            }
        }

        deserializer.deserialize_any(ItemVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Holder {
        types: EventTypes,
    }

    fn parse(toml: &str) -> Result<EventTypes, String> {
        toml::from_str::<Holder>(&format!("types = {toml}"))
            .map(|holder| holder.types)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn names_and_numbers_are_unique_and_round_trip() {
        for (number, name) in EVENT_TYPES {
            assert_eq!(event_type_by_name(name), Some(number));
            assert_eq!(event_type_name(number), Some(name));
            assert_eq!(event_type_label(number), name);
        }
        let mut names: Vec<_> = EVENT_TYPES.iter().map(|(_, name)| name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EVENT_TYPES.len());
    }

    #[test]
    fn undocumented_numbers_are_labelled_other() {
        for number in [2, 318, 329, 330, -1, i64::MAX] {
            assert_eq!(event_type_name(number), None);
            assert_eq!(event_type_label(number), "other");
        }
    }

    #[test]
    fn a_list_takes_numbers_names_and_a_star() {
        let cases = [
            ("[100]", EventTypes::Only(vec![100])),
            (
                "[\"push_start\", 0, \"record\"]",
                EventTypes::Only(vec![1, 0, 100]),
            ),
            ("[\"332\", 999]", EventTypes::Only(vec![332, 999])),
            ("[\"*\"]", EventTypes::All),
            ("[100, \"*\"]", EventTypes::All),
            ("\"*\"", EventTypes::All),
            (
                "\"relay, push_exception\"",
                EventTypes::Only(vec![314, 321]),
            ),
            ("[]", EventTypes::Only(vec![])),
        ];
        for (toml, expected) in cases {
            assert_eq!(parse(toml), Ok(expected), "{toml}");
        }
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_valid_ones() {
        let err = parse("[\"recording\"]").unwrap_err();
        assert!(
            err.contains("`recording`") && err.contains("record_status") && err.contains("\"*\""),
            "{err}"
        );
    }

    #[test]
    fn a_set_is_written_back_by_name() {
        let holder = Holder {
            types: EventTypes::Only(vec![100, 999]),
        };
        assert_eq!(
            toml::to_string(&holder).unwrap().trim(),
            "types = [\"record\", 999]"
        );
        let all = Holder {
            types: EventTypes::All,
        };
        assert_eq!(toml::to_string(&all).unwrap().trim(), "types = [\"*\"]");
        assert!(EventTypes::All.contains(12345));
        assert!(!EventTypes::Only(vec![1]).contains(0));
    }
}
