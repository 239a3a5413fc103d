//! What the broker sinks (nats, redis, rabbitmq) share, written once: the
//! `{event_type}` template their subject, stream or routing key may be, the
//! check of their URL's scheme, and the gate that spaces out reconnection
//! attempts to a broker that is down. Scrubbing credentials out of a client
//! library's error text is [`SecretUrl::scrub`], beside the URL that knows
//! which of its parts are secret; their timeout bounds are in
//! [`super::checks`], shared with the forward sink.
//!
//! Below the broker modules, above nothing but `checks`.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::checks::InvalidSetting;
use crate::secret_url::SecretUrl;

/// The one placeholder a template may hold: the record's event type number.
pub const EVENT_TYPE_PLACEHOLDER: &str = "{event_type}";

/// A subject, stream or routing key in which `{event_type}` stands for the
/// record's event type number (`css.{event_type}` → `css.100`). Made only by
/// [`Template::parse`], so any other placeholder, or a stray brace from a
/// typo such as `{event-type}`, is refused up front instead of naming a
/// subject or key literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

impl Template {
    /// Checks `text`, the value of the setting `field`: its only braces must
    /// be those of `{event_type}`.
    pub fn parse(field: &'static str, text: &str) -> Result<Self, InvalidSetting> {
        if text
            .replace(EVENT_TYPE_PLACEHOLDER, "")
            .contains(['{', '}'])
        {
            return Err(InvalidSetting::new(
                field,
                format!("the only placeholder is `{EVENT_TYPE_PLACEHOLDER}`, in `{text}`"),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The name for a record of `event_type`.
    pub fn render(&self, event_type: i64) -> String {
        self.0
            .replace(EVENT_TYPE_PLACEHOLDER, &event_type.to_string())
    }

    /// The name at its longest, with the longest type number (`i64::MIN`)
    /// in it: what length limits and character rules are checked against.
    pub fn longest(&self) -> String {
        self.render(i64::MIN)
    }
}

/// Checks that `url` (the setting `url`) has one of the two `schemes`, the
/// plain one first (`["redis", "rediss"]`). The error shows the URL redacted.
pub fn check_scheme(url: &SecretUrl, schemes: [&str; 2]) -> Result<(), InvalidSetting> {
    if schemes.contains(&url.scheme()) {
        return Ok(());
    }
    let [plain, secure] = schemes;
    let article = if plain.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    Err(InvalidSetting::new(
        "url",
        format!("must be {article} {plain}:// or {secure}:// URL, not `{url}`"),
    ))
}

/// Waits between connection attempts that double from `initial` up to
/// `max`: short at first, so a broker that blinked is back in use at once;
/// capped, so one that stays down is tried again within `max` of coming back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` failed attempts in a row (none after none).
    pub fn delay(self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        // 16 doublings pass any sensible `max`; more would only overflow.
        let doublings = (failures - 1).min(16);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Whether a broker sink may try to connect now. After a failed attempt the
/// next waits out its [`Backoff`]; deliveries meanwhile fail at once with the
/// last attempt's error, so a broker that is down is neither hammered by a
/// backlog's batches nor waited on by each of them.
#[derive(Debug)]
pub struct ReconnectGate {
    backoff: Backoff,
    /// Attempts that failed in a row.
    failures: u32,
    /// No attempt before this instant (none after a success).
    next_attempt: Option<Instant>,
    /// Why the last attempt failed, client texts already scrubbed.
    last_error: String,
}

/// Why the gate is closed: how long until the next attempt, and why the
/// last one failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Until the next attempt may start.
    pub wait: Duration,
    /// Why the last attempt failed.
    pub last_error: String,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (next connection attempt in {} ms)",
            self.last_error,
            self.wait.as_millis()
        )
    }
}

impl ReconnectGate {
    /// An open gate: the first attempt may start at once.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            failures: 0,
            next_attempt: None,
            last_error: String::new(),
        }
    }

    /// `Ok` when an attempt may start at `now`; otherwise how long until one
    /// may, and why the last failed.
    pub fn check(&self, now: Instant) -> Result<(), Closed> {
        match self.next_attempt {
            Some(at) if at > now => Err(Closed {
                wait: at - now,
                last_error: self.last_error.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Records an attempt that failed at `now` for `reason`; returns the
    /// wait before the next may start.
    pub fn failed(&mut self, now: Instant, reason: &str) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = self.backoff.delay(self.failures);
        self.next_attempt = Some(now + wait);
        reason.clone_into(&mut self.last_error);
        wait
    }

    /// Records a successful attempt, opening the gate; returns whether it
    /// ended a run of failures (worth saying so in the log).
    pub fn succeeded(&mut self) -> bool {
        let recovered = self.failures > 0;
        self.failures = 0;
        self.next_attempt = None;
        self.last_error.clear();
        recovered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_takes_only_the_event_type_placeholder() {
        let template = Template::parse("subject", "css.{event_type}.x").unwrap();
        assert_eq!(template.render(100), "css.100.x");
        assert_eq!(template.render(-1), "css.-1.x");
        assert_eq!(template.longest(), "css.-9223372036854775808.x");
        let twice = Template::parse("stream", "{event_type}:{event_type}").unwrap();
        assert_eq!(twice.render(7), "7:7");
        assert_eq!(Template::parse("s", "plain").unwrap().render(1), "plain");
        for bad in [
            "a.{event}",
            "{event-type}",
            "a.{event_type",
            "}",
            "{{event_type}}",
        ] {
            let err = Template::parse("routing_key", bad).unwrap_err();
            assert_eq!(err.field, "routing_key", "{bad}");
            assert_eq!(
                err.reason,
                format!("the only placeholder is `{{event_type}}`, in `{bad}`")
            );
        }
    }

    #[test]
    fn a_wrong_scheme_is_named_with_the_url_redacted() {
        let url = SecretUrl::parse("http://u:s3cret@h").unwrap();
        let err = check_scheme(&url, ["amqp", "amqps"]).unwrap_err();
        assert_eq!(err.field, "url");
        assert_eq!(
            err.reason,
            "must be an amqp:// or amqps:// URL, not `http://u:[redacted]@h/`"
        );
        let err = check_scheme(&url, ["nats", "tls"]).unwrap_err();
        assert!(err.reason.starts_with("must be a nats:// or tls:// URL"));
        let secure = SecretUrl::parse("rediss://h").unwrap();
        assert_eq!(check_scheme(&secure, ["redis", "rediss"]), Ok(()));
    }

    #[test]
    fn waits_double_from_the_first_up_to_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        };
        let waits: Vec<u128> = (0..=7).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(waits, [0, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
        assert_eq!(backoff.delay(u32::MAX), backoff.max);
    }

    #[test]
    fn the_gate_closes_after_a_failure_until_its_wait_is_over() {
        let backoff = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        };
        let mut gate = ReconnectGate::new(backoff);
        let start = Instant::now();
        assert_eq!(gate.check(start), Ok(()));
        assert_eq!(gate.failed(start, "refused"), backoff.initial);
        let closed = gate.check(start + Duration::from_millis(100)).unwrap_err();
        assert_eq!(closed.wait, Duration::from_millis(400));
        assert_eq!(
            closed.to_string(),
            "refused (next connection attempt in 400 ms)"
        );
        let later = start + backoff.initial;
        assert_eq!(gate.check(later), Ok(()));
        assert_eq!(gate.failed(later, "refused again"), backoff.initial * 2);
        assert!(gate.succeeded(), "a success after failures is a recovery");
        assert_eq!(gate.check(later), Ok(()));
        assert!(!gate.succeeded());
        // After a success the waits start again from the first.
        assert_eq!(gate.failed(later, "down"), backoff.initial);
    }
}
