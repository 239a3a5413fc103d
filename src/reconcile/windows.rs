//! Which stretches of time a run asks Tencent about, per stream: pure
//! arithmetic on Unix seconds, so every edge is a unit test.
//!
//! A run checks `[since, until]` (`until` = now minus `lag_secs`). For one
//! stream it asks only about the part after the stream's checkpoint (what
//! earlier runs finished) and near the stream's push sessions (callbacks
//! come while a stream is pushed, and recording files shortly after it
//! stops), cut into windows no longer than Tencent allows (one day).

/// How long after a push session ends its callbacks may still come: the
/// last recording file is written and uploaded after the stream stops.
/// Generous, because a window costs one request and a missed callback is lost.
pub const AFTER_SESSION_SECS: i64 = 3_600;

/// How long before a session's reported start to look (clocks disagree).
pub const BEFORE_SESSION_SECS: i64 = 60;

/// A push session as `DescribeLiveStreamEventList` reports it, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// When pushing started.
    pub start: i64,
    /// When it stopped; `None` while the stream is still pushed.
    pub end: Option<i64>,
}

/// An inclusive range of Unix seconds `[from, to]` (Tencent's StartTime and
/// EndTime are both inclusive, to the second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First second.
    pub from: i64,
    /// Last second.
    pub to: i64,
}

/// The windows to ask about for one stream: `[since, until]` after
/// `checked_until` (the first second not yet checked, or `None`), where
/// the stream's sessions could have sent callbacks, cut into pieces of at
/// most `max_span` seconds. Sorted, disjoint.
pub fn stream_windows(
    since: i64,
    until: i64,
    checked_until: Option<i64>,
    sessions: &[Session],
    max_span: i64,
) -> Vec<Window> {
    let from = checked_until.map_or(since, |checked| checked.max(since));
    if from > until || max_span < 1 {
        return Vec::new();
    }
    let mut active: Vec<Window> = sessions
        .iter()
        .map(|session| Window {
            from: session.start.saturating_sub(BEFORE_SESSION_SECS).max(from),
            to: session
                .end
                .map_or(until, |end| end.saturating_add(AFTER_SESSION_SECS))
                .min(until),
        })
        .filter(|window| window.from <= window.to)
        .collect();
    active.sort_by_key(|window| window.from);
    let mut merged: Vec<Window> = Vec::new();
    for window in active {
        match merged.last_mut() {
            Some(last) if window.from <= last.to.saturating_add(1) => {
                last.to = last.to.max(window.to);
            }
            _ => merged.push(window),
        }
    }
    merged
        .into_iter()
        .flat_map(|window| split(window, max_span))
        .collect()
}

/// `window` cut into consecutive pieces of at most `max_span` seconds.
pub fn split(window: Window, max_span: i64) -> Vec<Window> {
    let mut pieces = Vec::new();
    let mut from = window.from;
    while from <= window.to {
        let to = from.saturating_add(max_span - 1).min(window.to);
        pieces.push(Window { from, to });
        if to == i64::MAX {
            break;
        }
        from = to + 1;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn window(from: i64, to: i64) -> Window {
        Window { from, to }
    }

    #[test]
    fn a_long_window_is_cut_into_days_without_gaps_or_overlaps() {
        let pieces = split(window(0, 2 * DAY + 10), DAY);
        assert_eq!(
            pieces,
            [
                window(0, DAY - 1),
                window(DAY, 2 * DAY - 1),
                window(2 * DAY, 2 * DAY + 10)
            ]
        );
        assert_eq!(split(window(5, 5), DAY), [window(5, 5)]);
        assert!(split(window(6, 5), DAY).is_empty());
    }

    #[test]
    fn only_the_time_near_a_session_is_asked_about() {
        let session = Session {
            start: 10_000,
            end: Some(12_000),
        };
        let windows = stream_windows(0, 100_000, None, &[session], DAY);
        assert_eq!(
            windows,
            [window(
                10_000 - BEFORE_SESSION_SECS,
                12_000 + AFTER_SESSION_SECS
            )]
        );
    }

    #[test]
    fn a_live_session_runs_to_the_end_of_the_run_and_overlapping_ones_merge() {
        let sessions = [
            Session {
                start: 1_000,
                end: Some(2_000),
            },
            Session {
                start: 3_000,
                end: None,
            },
        ];
        // 2_000 + 3_600 overlaps 3_000 - 60: one window.
        assert_eq!(
            stream_windows(0, 9_000, None, &sessions, DAY),
            [window(940, 9_000)]
        );
    }

    #[test]
    fn the_checkpoint_and_the_run_bounds_clip_every_window() {
        let session = Session {
            start: 0,
            end: Some(3 * DAY),
        };
        let windows = stream_windows(DAY / 2, 2 * DAY, Some(DAY), &[session], DAY);
        assert_eq!(
            windows,
            [window(DAY, 2 * DAY - 1), window(2 * DAY, 2 * DAY)]
        );
        // Everything already checked: nothing to ask.
        assert!(stream_windows(0, DAY, Some(DAY + 1), &[session], DAY).is_empty());
        // A session that ended long before the checkpoint: nothing to ask.
        let old = Session {
            start: 0,
            end: Some(10),
        };
        assert!(stream_windows(0, 10 * DAY, Some(DAY), &[old], DAY).is_empty());
    }
}
