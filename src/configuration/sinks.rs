//! `[[sinks]]`: the list as a whole. Each sink's own settings, defaults and
//! checks live with the sink in [`crate::sinks`]; what only the list can
//! know is checked here — that there is a sink, that names are unique, and
//! that no two file sinks write one file — and each sink's errors are named
//! by its place in the list (`sinks[0].url`).

use std::collections::HashSet;

use super::ConfigError;
use crate::sinks::{SinkKind, SinkSettings};

/// The sinks when none are configured: one `log` sink named `console`.
pub(super) fn default_sinks() -> Vec<SinkSettings> {
    vec![SinkSettings::log("console")]
}

/// Checks every sink, then what only the whole list can show.
pub(super) fn validate(sinks: &[SinkSettings]) -> Result<(), ConfigError> {
    if sinks.is_empty() {
        return Err(ConfigError::invalid("sinks", "at least one sink is needed"));
    }
    let mut names = HashSet::new();
    let mut file_paths = HashSet::new();
    for (index, sink) in sinks.iter().enumerate() {
        let key = |field: &str| format!("sinks[{index}].{field}");
        sink.validate()
            .map_err(|err| ConfigError::invalid(key(err.field), err.reason))?;
        if !names.insert(sink.name.as_str()) {
            return Err(ConfigError::invalid(
                key("name"),
                format!(
                    "sink name `{}` is used twice; names must be unique",
                    sink.name
                ),
            ));
        }
        if let SinkKind::File(file) = &sink.kind
            && !file_paths.insert(file.path.clone())
        {
            return Err(ConfigError::invalid(
                key("path"),
                "another file sink writes the same file; lines would interleave",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::configuration::testing::{assert_each_rejected, load_toml, with_key};
    use crate::sinks::SinkKind;

    #[test]
    fn bad_sink_values_are_rejected_with_the_setting_named() {
        const LOG: &str = "[[sinks]]\nname = \"a\"\ntype = \"log\"\n";
        const FORWARD: &str = "[[sinks]]\nname = \"w\"\ntype = \"forward\"\n";
        let log = |lines: &str| with_key(&format!("{LOG}{lines}"));
        let forward = |lines: &str| with_key(&format!("{FORWARD}{lines}"));
        let to_h = |lines: &str| forward(&format!("url = \"http://h/\"\n{lines}"));
        assert_each_rejected(&[
            (log(LOG), "sinks[1].name"),
            (log("event_types = []"), "sinks[0].event_types"),
            (
                log("event_types = [\"recording\"]"),
                "valid names are: push_end, push_start, record,",
            ),
            (log("max_attempts = 0"), "sinks[0].max_attempts"),
            (log("retry_initial_ms = 0"), "sinks[0].retry_initial_ms"),
            (with_key("sinks = []"), "sinks"),
            (
                with_key("[[sinks]]\nname = \"f\"\ntype = \"file\""),
                "sinks[0].path",
            ),
            (log("path = \"x.jsonl\""), "does not apply to a `log` sink"),
            (forward(""), "sinks[0].url"),
            (forward("url = \"not a url\""), "not a valid URL"),
            (forward("url = \"ftp://h/x\""), "http:// or https://"),
            (to_h("signing_secret = \"nope\""), "whsec_"),
            (to_h("headers = { \"a b\" = \"x\" }"), "header name"),
            (to_h("path = \"x\""), "does not apply to a `forward` sink"),
            (
                with_key(
                    "[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\n[[sinks]]\nname = \"b\"\ntype = \"file\"\npath = \"x\"",
                ),
                "same file",
            ),
            (
                log(&format!(
                    "max_attempts = {}",
                    crate::sinks::MAX_ATTEMPTS + 1
                )),
                "sinks[0].max_attempts",
            ),
            (
                log(&format!(
                    "retry_max_ms = {}",
                    crate::sinks::MAX_RETRY_MS + 1
                )),
                "sinks[0].retry_max_ms",
            ),
            (
                log("retry_initial_ms = 700000"),
                "sinks[0].retry_initial_ms",
            ),
            (to_h("timeout_secs = 0"), "sinks[0].timeout_secs"),
            (to_h("timeout_secs = 3601"), "sinks[0].timeout_secs"),
            (to_h("concurrency = 0"), "sinks[0].concurrency"),
            (
                to_h(&format!(
                    "concurrency = {}",
                    crate::sinks::MAX_FORWARD_CONCURRENCY + 1
                )),
                "sinks[0].concurrency",
            ),
            (log("colour = \"red\""), "unknown field `colour`"),
        ]);
    }

    #[test]
    fn an_unknown_sink_type_lists_the_valid_ones() {
        let toml = "[auth]\nkeys=[\"k\"]\n[[sinks]]\nname=\"x\"\ntype=\"pulsar\"\n";
        let err = load_toml(toml, &[]).unwrap_err().to_string();
        assert!(
            err.contains("pulsar") && err.contains("kafka") && err.contains("log"),
            "{err}"
        );
    }

    #[test]
    fn a_full_sink_configuration_loads() {
        let toml = r#"
            [auth]
            keys = ["k"]
            [[sinks]]
            name = "archive"
            type = "file"
            path = "./data/records.jsonl"
            rotate_max_bytes = 1000
            [[sinks]]
            name = "backend"
            type = "forward"
            url = "https://backend.example.com/hooks/recording"
            timeout_secs = 3
            headers = { Authorization = "Bearer abc" }
            signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            event_types = [100, 0, 1]
            max_attempts = 3
        "#;
        let settings = load_toml(toml, &[]).unwrap();
        assert_eq!(settings.sinks.len(), 2);
        assert_eq!(settings.sinks[1].event_types, vec![100, 0, 1].into());
        let SinkKind::Forward(forward) = &settings.sinks[1].kind else {
            panic!("not a forward sink: {:?}", settings.sinks[1]);
        };
        assert_eq!(forward.timeout_secs, 3);
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("Bearer abc") && !debug.contains("MfKQ9r8"),
            "{debug}"
        );
        assert_eq!(crate::sinks::build(&settings.sinks).unwrap().len(), 2);
    }

    #[test]
    fn sinks_select_event_types_by_name_number_or_star() {
        let toml = "[auth]\nkeys = [\"k\"]\n\
            [[sinks]]\nname = \"a\"\ntype = \"log\"\nevent_types = [\"push_start\", 0, \"record_status\"]\n\
            [[sinks]]\nname = \"b\"\ntype = \"log\"\nevent_types = [\"*\"]\n\
            [[sinks]]\nname = \"c\"\ntype = \"log\"\n";
        let settings = load_toml(toml, &[]).unwrap();
        assert_eq!(settings.sinks[0].event_types, vec![1, 0, 332].into());
        assert_eq!(
            settings.sinks[1].event_types,
            crate::protocol::EventTypes::All
        );
        assert_eq!(settings.sinks[2].event_types, vec![100].into());
        let shown = settings.to_redacted_toml().unwrap();
        assert!(
            shown.contains(r#""record_status","#) && shown.contains(r#"event_types = ["*"]"#),
            "{shown}"
        );
    }
}
