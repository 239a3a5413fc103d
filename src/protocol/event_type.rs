//! CSS event types: the one table of what recordhook knows of each
//! ([`EVENT_TYPES`]: number, name, the key its view sits under in a record,
//! how to read that view), and a selection of types (what a sink receives,
//! which types may arrive unsigned).
//!
//! Names exist for people (configuration, logs, metrics); the number is what
//! CSS sends and what the spool stores. A number nobody documented has no
//! name: in metrics and logs it is `other`, so a sender inventing numbers
//! cannot grow the label set without bound.
//!
//! Adding an event type is a row here and its view in `views.rs` (a struct
//! and an [`EventView`] variant); everything else reads this table.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::RECORDING_EVENT_TYPE;
use super::views::{EventView, ReadView, carries_average_score};

/// What recordhook knows of one documented event type.
#[derive(Debug, Clone, Copy)]
pub struct EventTypeSpec {
    /// The `event_type` CSS sends.
    pub number: i64,
    /// Its name in configuration (`event_types`), logs and metric labels.
    pub name: &'static str,
    /// The key its typed view sits under in a record's JSON (shared by the
    /// types that share a view: 0 and 1 are both `push`).
    pub key: &'static str,
    /// Reads its typed view from a callback's fields, appending a warning
    /// for every unusable value: a view never refuses a callback.
    pub read: fn(&Map<String, Value>, &mut Vec<String>) -> EventView,
    /// Reads its typed view back from a stored record: the JSON under `key`.
    pub parse: fn(Value) -> Result<EventView, serde_json::Error>,
    /// Another number CSS sends this type under, when it does.
    pub sent_as: Option<SentAs>,
}

/// Another number CSS sends an event type under, and how the content tells
/// that callback apart from the type the number names.
#[derive(Debug, Clone, Copy)]
pub struct SentAs {
    /// The number sent.
    pub number: i64,
    /// Whether a callback sent with `number` is in fact this type.
    pub when: fn(&Map<String, Value>) -> bool,
}

/// Every documented event type, in number order.
pub const EVENT_TYPES: &[EventTypeSpec] = &[
    EventTypeSpec {
        number: 0,
        name: "push_end",
        key: "push",
        read: |fields, warnings| EventView::Push(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::Push),
        sent_as: None,
    },
    EventTypeSpec {
        number: 1,
        name: "push_start",
        key: "push",
        read: |fields, warnings| EventView::Push(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::Push),
        sent_as: None,
    },
    EventTypeSpec {
        number: RECORDING_EVENT_TYPE,
        name: "record",
        key: "recording",
        read: |fields, warnings| EventView::Recording(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::Recording),
        sent_as: None,
    },
    EventTypeSpec {
        number: 200,
        name: "screenshot",
        key: "screenshot",
        read: |fields, warnings| EventView::Screenshot(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::Screenshot),
        sent_as: None,
    },
    EventTypeSpec {
        number: 314,
        name: "relay",
        key: "relay",
        read: |fields, warnings| EventView::Relay(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::Relay),
        sent_as: None,
    },
    EventTypeSpec {
        number: 315,
        name: "audio_audit",
        key: "audio_audit",
        read: |fields, warnings| EventView::AudioAudit(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::AudioAudit),
        sent_as: None,
    },
    EventTypeSpec {
        number: 317,
        name: "image_audit",
        key: "image_audit",
        read: |fields, warnings| EventView::ImageAudit(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::ImageAudit),
        sent_as: None,
    },
    EventTypeSpec {
        number: 321,
        name: "push_exception",
        key: "push_exception",
        read: |fields, warnings| EventView::PushException(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::PushException),
        sent_as: None,
    },
    EventTypeSpec {
        number: 328,
        name: "stream_monitor",
        key: "stream_monitor",
        read: |fields, warnings| EventView::StreamMonitor(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::StreamMonitor),
        sent_as: None,
    },
    EventTypeSpec {
        number: 332,
        name: "record_status",
        key: "record_status",
        read: |fields, warnings| EventView::RecordStatus(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::RecordStatus),
        sent_as: None,
    },
    EventTypeSpec {
        number: 338,
        name: "subtitles",
        key: "subtitles",
        read: |fields, warnings| EventView::Subtitles(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::Subtitles),
        sent_as: None,
    },
    EventTypeSpec {
        number: 341,
        name: "record_exception",
        key: "record_exception",
        read: |fields, warnings| EventView::RecordException(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::RecordException),
        sent_as: None,
    },
    EventTypeSpec {
        number: 343,
        name: "quality_control",
        key: "quality_control",
        read: |fields, warnings| EventView::QualityControl(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::QualityControl),
        sent_as: None,
    },
    EventTypeSpec {
        number: 344,
        name: "assessment_threshold",
        key: "assessment_threshold",
        read: |fields, warnings| EventView::AssessmentThreshold(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::AssessmentThreshold),
        sent_as: None,
    },
    EventTypeSpec {
        number: 345,
        name: "assessment_average",
        key: "assessment_average",
        read: |fields, warnings| EventView::AssessmentAverage(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::AssessmentAverage),
        sent_as: Some(SentAs {
            number: 344,
            when: carries_average_score,
        }),
    },
    EventTypeSpec {
        number: 347,
        name: "erase",
        key: "erase",
        read: |fields, warnings| EventView::Erase(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::Erase),
        sent_as: None,
    },
    EventTypeSpec {
        number: 348,
        name: "live_summary",
        key: "live_summary",
        read: |fields, warnings| EventView::LiveSummary(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::LiveSummary),
        sent_as: None,
    },
    EventTypeSpec {
        number: 349,
        name: "highlight",
        key: "highlight",
        read: |fields, warnings| EventView::Highlight(read(fields, warnings)),
        parse: |stored| serde_json::from_value(stored).map(EventView::Highlight),
        sent_as: None,
    },
];

/// Reads a view of type `V` for a row of [`EVENT_TYPES`].
fn read<V: ReadView>(fields: &Map<String, Value>, warnings: &mut Vec<String>) -> Box<V> {
    Box::new(V::read(fields, warnings))
}

impl EventTypeSpec {
    /// The row of a documented event type; `None` for any other number.
    pub fn of(event_type: i64) -> Option<&'static Self> {
        EVENT_TYPES.iter().find(|spec| spec.number == event_type)
    }

    /// The row of the type with this name.
    pub fn named(name: &str) -> Option<&'static Self> {
        EVENT_TYPES.iter().find(|spec| spec.name == name)
    }

    /// Whether some type's view sits under `key` in a record; the key as a
    /// `&'static str` if so.
    pub fn view_key(key: &str) -> Option<&'static str> {
        EVENT_TYPES
            .iter()
            .find(|spec| spec.key == key)
            .map(|spec| spec.key)
    }
}

/// The event type a callback is, from its number and, where the number is
/// known to lie, its content (a row's [`SentAs`]): the documented samples
/// of 345 (average score) say 344, so a 344 carrying `average_score` or
/// `frames` is a 345.
pub fn classify(event_type: i64, fields: &Map<String, Value>) -> i64 {
    EVENT_TYPES
        .iter()
        .find(|spec| {
            spec.sent_as
                .is_some_and(|sent_as| sent_as.number == event_type && (sent_as.when)(fields))
        })
        .map_or(event_type, |spec| spec.number)
}

/// The label of every event type without a name.
pub const OTHER_EVENT_TYPE: &str = "other";

/// The name of a documented event type; `None` for any other number.
pub fn event_type_name(event_type: i64) -> Option<&'static str> {
    EventTypeSpec::of(event_type).map(|spec| spec.name)
}

/// The name of `event_type` for a metric label or a log field: its name, or
/// [`OTHER_EVENT_TYPE`] (a bounded set whatever is received).
pub fn event_type_label(event_type: i64) -> &'static str {
    event_type_name(event_type).unwrap_or(OTHER_EVENT_TYPE)
}

/// The number of a documented event type's name.
pub fn event_type_by_name(name: &str) -> Option<i64> {
    EventTypeSpec::named(name).map(|spec| spec.number)
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
            let valid: Vec<&str> = EVENT_TYPES.iter().map(|spec| spec.name).collect();
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
        for &EventTypeSpec { number, name, .. } in EVENT_TYPES {
            assert_eq!(event_type_by_name(name), Some(number));
            assert_eq!(event_type_name(number), Some(name));
            assert_eq!(event_type_label(number), name);
        }
        let mut names: Vec<_> = EVENT_TYPES.iter().map(|spec| spec.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EVENT_TYPES.len());
    }

    #[test]
    fn every_row_parses_back_the_view_it_reads_and_rows_sharing_a_key_share_a_view() {
        for spec in EVENT_TYPES {
            let view = (spec.read)(&Map::new(), &mut Vec::new());
            let stored = serde_json::to_value(&view).unwrap();
            assert_eq!((spec.parse)(stored).unwrap(), view, "{}", spec.name);
            let first = EVENT_TYPES
                .iter()
                .find(|other| other.key == spec.key)
                .unwrap();
            assert_eq!(
                (first.read)(&Map::new(), &mut Vec::new()),
                view,
                "{} and {} share `{}`",
                first.name,
                spec.name,
                spec.key
            );
        }
        let mut numbers: Vec<_> = EVENT_TYPES.iter().map(|spec| spec.number).collect();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            EVENT_TYPES.len(),
            "in number order, once each"
        );
        assert!(numbers.is_sorted());
    }

    #[test]
    fn a_type_sent_under_another_number_is_told_apart_only_by_its_content() {
        for spec in EVENT_TYPES {
            if let Some(sent_as) = spec.sent_as {
                assert!(EventTypeSpec::of(sent_as.number).is_some(), "{}", spec.name);
                assert_eq!(classify(sent_as.number, &Map::new()), sent_as.number);
            }
            assert_eq!(classify(spec.number, &Map::new()), spec.number);
        }
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
