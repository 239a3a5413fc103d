//! One reconciliation run: list the streams pushed in the window, ask for
//! each stream's callback records window by window, and settle every record
//! against the spool — present, recovered (stored through the same accept
//! path as a live callback), or a gap. A stream's checkpoint moves only
//! after all its windows were read, so a run that stops anywhere (an error,
//! a restart, SIGKILL) resumes where its last finished stream left off.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;

use super::recover::{excerpt, recover};
use super::report::Report;
use super::settings::ReconcileSettings;
use super::windows::{Session, Window, stream_windows};
use crate::metrics::Metrics;
use crate::protocol::{Reconciled, event_type_label};
use crate::record::Record;
use crate::spool::reconciliation::Gap;
use crate::spool::{Acceptance, NewRecord, Spool, SpoolError, unix_ms};
use crate::tencent::live::{
    CallbackEventInfo, DescribeCallbackRecordsListRequest, DescribeLiveStreamEventListRequest,
    MAX_EVENTS_PAGE_SIZE, MAX_EVENTS_RESULTS, MAX_RECORDS_LOOKBACK_SECS, MAX_RECORDS_WINDOW_SECS,
};
use crate::tencent::{ApiError, TencentClient, time as tencent_time};

/// Callback records asked for per page.
const RECORDS_PAGE_SIZE: i64 = 100;

/// Streams worked on at once. The client's rate limiter bounds the requests;
/// this only keeps enough of them in flight to reach that rate.
const STREAM_CONCURRENCY: usize = 8;

/// Kept inside the dedup window by this much: `accept` checks dedup at the
/// run's start time, and a long run must not reach records whose dedup
/// entries maintenance prunes meanwhile.
const DEDUP_MARGIN_SECS: i64 = 3_600;

/// Kept off the 14-day edge: a window starting exactly 14 days back when
/// the request is built is older than that when Tencent checks it.
const LOOKBACK_MARGIN_SECS: i64 = 300;

/// Why a run stopped before its end. (The API error is in the message, and
/// on purpose not a `source`: it carries its own cause in its message, and
/// `{:#}` would print the chain twice.)
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Tencent refused the credentials; nothing will work until they are fixed.
    #[error(
        "Tencent's API refused the credentials: {0}; check reconcile.secret_id, the secret key \
         and that the sub-account may call DescribeLiveStreamEventList and \
         DescribeCallbackRecordsList"
    )]
    Auth(ApiError),
    /// The streams pushed in the window could not be listed.
    #[error("listing the streams pushed in the window failed: {0}")]
    Listing(ApiError),
    /// The spool failed.
    #[error("the spool failed during reconciliation: {0}")]
    Spool(#[from] SpoolError),
}

/// What one run checks.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// First second to check (Unix seconds); default now minus `lookback_secs`.
    pub since: Option<i64>,
    /// Last second to check; default (and at most) now minus `lag_secs`.
    pub until: Option<i64>,
    /// Only this stream (skips listing the streams).
    pub stream: Option<String>,
    /// Look only: store nothing, record no gap, move no checkpoint.
    pub dry_run: bool,
    /// Skip what earlier runs finished (the server's runs do; a one-off
    /// audit from the command line checks the whole window again).
    pub resume: bool,
}

/// Runs reconciliation against one spool with one API client.
pub struct Reconciler {
    client: TencentClient,
    spool: Spool,
    settings: ReconcileSettings,
    metrics: Option<Arc<Metrics>>,
    /// Called with the event type of each recovered record (wakes the sinks).
    on_stored: Arc<dyn Fn(i64) + Send + Sync>,
    /// The spool's dedup window, in seconds: no run looks further back, or
    /// a callback older than the dedup memory would be stored a second time.
    dedup_window_secs: i64,
}

impl Reconciler {
    /// A reconciler; `on_stored` is told the event type of every record it
    /// stores, so the sinks that take it wake at once.
    pub fn new(
        client: TencentClient,
        spool: Spool,
        settings: ReconcileSettings,
        metrics: Option<Arc<Metrics>>,
        on_stored: Arc<dyn Fn(i64) + Send + Sync>,
        dedup_window: Duration,
    ) -> Self {
        Self {
            client,
            spool,
            settings,
            metrics,
            on_stored,
            dedup_window_secs: i64::try_from(dedup_window.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &ReconcileSettings {
        &self.settings
    }

    /// The spool it works on.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The metrics it counts in, if any.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The window a run at `now` checks, in Unix seconds, inclusive: never
    /// further back than Tencent keeps records, nor than the dedup memory
    /// reaches (with an hour to spare for a long run), whatever `since` says.
    pub fn window(&self, options: &RunOptions, now: SystemTime) -> Window {
        let now = unix_ms(now) / 1000;
        let lag = i64::try_from(self.settings.lag_secs).unwrap_or(i64::MAX);
        let oldest = (now - (MAX_RECORDS_LOOKBACK_SECS - LOOKBACK_MARGIN_SECS))
            .max(now.saturating_sub(self.dedup_window_secs) + DEDUP_MARGIN_SECS);
        let until = options
            .until
            .map_or(now - lag, |until| until.min(now - lag));
        let since = options.since.unwrap_or(self.default_since(now)).max(oldest);
        Window {
            from: since,
            to: until,
        }
    }

    /// Where a run at `now` (Unix seconds) starts unless told otherwise.
    fn default_since(&self, now: i64) -> i64 {
        now - i64::try_from(self.settings.lookback_secs).unwrap_or(i64::MAX)
    }

    /// One run over the window `options` describe, at `now`.
    pub async fn run(
        &self,
        options: &RunOptions,
        now: SystemTime,
    ) -> Result<Report, ReconcileError> {
        let window = self.window(options, now);
        let mut report = Report {
            window_start: utc(window.from),
            window_end: utc(window.to),
            dry_run: options.dry_run,
            ..Report::default()
        };
        if window.from > window.to {
            return Ok(report);
        }
        let streams = match &options.stream {
            Some(stream) => HashMap::from([(
                stream.clone(),
                vec![Session {
                    start: window.from,
                    end: None,
                }],
            )]),
            None => self.list_streams(window, &mut report).await?,
        };
        report.streams = streams.len() as u64;
        let checkpoints = self
            .spool
            .reconcile_checkpoints(streams.keys().cloned().collect())
            .await?;
        let event_types = &self.settings.event_types;
        let default_since = self.default_since(unix_ms(now) / 1000);
        let jobs = streams.into_iter().map(|(stream, sessions)| {
            // The stream was checked up to where the least advanced of its
            // event types stopped.
            let stored = event_types
                .iter()
                .map(|event_type| checkpoints.get(&(stream.clone(), *event_type)).copied())
                .min()
                .flatten()
                .map(|ms| ms / 1000);
            let checked_until = if options.resume { stored } else { None };
            let from = checked_until.map_or(window.from, |c| c.max(window.from));
            // The checkpoint may move to the end of this run only if the run
            // covers everything from where it stands (or, with none, from
            // where a server run would begin): a one-off run over the last
            // ten minutes must not mark the hours before them as checked.
            let may_save = !options.dry_run && from <= stored.unwrap_or(default_since);
            let windows = stream_windows(
                window.from,
                window.to,
                checked_until,
                &sessions,
                MAX_RECORDS_WINDOW_SECS,
            );
            self.check_stream(stream, windows, window.to, options.dry_run, may_save, now)
        });
        let mut parts = futures_util::stream::iter(jobs).buffer_unordered(STREAM_CONCURRENCY);
        while let Some(part) = parts.next().await {
            report.merge(part?);
        }
        Ok(report)
    }

    /// Every stream pushed in `window` (after the domain and app filters),
    /// with its sessions.
    async fn list_streams(
        &self,
        window: Window,
        report: &mut Report,
    ) -> Result<HashMap<String, Vec<Session>>, ReconcileError> {
        let mut streams: HashMap<String, Vec<Session>> = HashMap::new();
        let domains: Vec<Option<String>> = if self.settings.domains.is_empty() {
            vec![None]
        } else {
            self.settings.domains.iter().cloned().map(Some).collect()
        };
        let app = match self.settings.app_names.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        for domain in domains {
            let mut pending = vec![window];
            while let Some(part) = pending.pop() {
                match self
                    .list_part(part, domain.clone(), app.clone(), &mut streams, report)
                    .await?
                {
                    Listed::All => {}
                    // More than Tencent serves for one query: halve the
                    // window until each half fits.
                    Listed::TooMany if part.to - part.from >= 60 => {
                        let middle = part.from + (part.to - part.from) / 2;
                        pending.push(Window {
                            from: part.from,
                            to: middle,
                        });
                        pending.push(Window {
                            from: middle + 1,
                            to: part.to,
                        });
                    }
                    Listed::TooMany => {
                        tracing::warn!(
                            from = part.from,
                            to = part.to,
                            "more than 10000 push sessions in one minute; streams beyond \
                             Tencent's limit are not reconciled"
                        );
                    }
                }
            }
        }
        Ok(streams)
    }

    /// Lists one window's sessions into `streams`, or says there are more
    /// than one query may return.
    async fn list_part(
        &self,
        part: Window,
        domain: Option<String>,
        app: Option<String>,
        streams: &mut HashMap<String, Vec<Session>>,
        report: &mut Report,
    ) -> Result<Listed, ReconcileError> {
        let mut page = 1;
        loop {
            let request = DescribeLiveStreamEventListRequest {
                domain_name: domain.clone(),
                app_name: app.clone(),
                page_num: Some(page),
                page_size: Some(MAX_EVENTS_PAGE_SIZE),
                ..DescribeLiveStreamEventListRequest::new(utc(part.from), utc(part.to))
            };
            report.api_calls += 1;
            let answer = self
                .client
                .describe_live_stream_events(&request)
                .await
                .map_err(|err| {
                    if err.is_auth() {
                        ReconcileError::Auth(err)
                    } else {
                        ReconcileError::Listing(err)
                    }
                })?
                .response;
            if page == 1 && answer.total_num.unwrap_or(0) > MAX_EVENTS_RESULTS {
                return Ok(Listed::TooMany);
            }
            let paging = Paging {
                page_size: answer.page_size,
                total_num: answer.total_num,
                total_page: answer.total_page,
            };
            let events = answer.event_list.unwrap_or_default();
            let received = events.len() as i64;
            for event in events {
                let Some(stream) = event.stream_name.filter(|name| !name.is_empty()) else {
                    continue;
                };
                if !self.settings.app_names.is_empty()
                    && !event
                        .app_name
                        .as_ref()
                        .is_some_and(|app| self.settings.app_names.contains(app))
                {
                    continue;
                }
                let parse = |text: Option<String>| {
                    text.filter(|text| !text.trim().is_empty())
                        .and_then(|text| tencent_time::parse(&text).ok())
                };
                let start = parse(event.stream_start_time).unwrap_or(part.from);
                let end = parse(event.stream_end_time);
                streams
                    .entry(stream)
                    .or_default()
                    .push(Session { start, end });
            }
            if last_page(page, received, MAX_EVENTS_PAGE_SIZE, &paging) {
                return Ok(Listed::All);
            }
            page += 1;
        }
    }

    /// Reads every window of one stream and settles what it finds; moves the
    /// stream's checkpoint to `until` once all of them were read.
    async fn check_stream(
        &self,
        stream: String,
        windows: Vec<Window>,
        until: i64,
        dry_run: bool,
        may_save: bool,
        now: SystemTime,
    ) -> Result<Report, ReconcileError> {
        let mut report = Report::default();
        if !windows.is_empty() {
            report.streams_checked = 1;
        }
        let mut seen = HashMap::new();
        for window in windows {
            if let Err(err) = self
                .check_window(&stream, window, dry_run, now, &mut seen, &mut report)
                .await
            {
                match err {
                    WindowError::Api(err) if err.is_auth() => {
                        return Err(ReconcileError::Auth(err));
                    }
                    WindowError::Api(err) => {
                        tracing::warn!(stream, error = %err, "reconciliation left a stream for the next run");
                        report.errors.push(format!("{stream}: {err}"));
                        return Ok(report);
                    }
                    WindowError::Spool(err) => return Err(err.into()),
                }
            }
        }
        if may_save {
            self.spool
                .save_reconcile_checkpoint(&stream, &self.settings.event_types, (until + 1) * 1000)
                .await?;
        }
        Ok(report)
    }

    /// Pages through one window of one stream's callback records.
    async fn check_window(
        &self,
        stream: &str,
        window: Window,
        dry_run: bool,
        now: SystemTime,
        seen: &mut HashMap<String, Option<i64>>,
        report: &mut Report,
    ) -> Result<(), WindowError> {
        let event_type_filter = match self.settings.event_types.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        let mut page = 1;
        loop {
            let request = DescribeCallbackRecordsListRequest {
                start_time: utc(window.from),
                end_time: utc(window.to),
                stream_name: stream.to_owned(),
                page_num: page,
                page_size: RECORDS_PAGE_SIZE,
                event_type: event_type_filter,
                result_code: None,
            };
            report.api_calls += 1;
            let called = self
                .client
                .describe_callback_records(&request)
                .await
                .map_err(WindowError::Api)?;
            let answer = called.response;
            let paging = Paging {
                page_size: answer.page_size,
                total_num: answer.total_num,
                total_page: answer.total_page,
            };
            let records = answer.data_info_list.unwrap_or_default();
            let received = records.len() as i64;
            self.settle_page(
                stream,
                records,
                &called.request_id,
                dry_run,
                now,
                seen,
                report,
            )
            .await?;
            if last_page(page, received, RECORDS_PAGE_SIZE, &paging) {
                return Ok(());
            }
            page += 1;
        }
    }

    /// Settles one page of callback records against the spool. `seen` holds
    /// the event ids this stream's run has met, with their result codes:
    /// Tencent may list each delivery attempt of one callback (CSS's
    /// retries), and one callback is counted and stored once.
    #[allow(clippy::too_many_arguments)]
    async fn settle_page(
        &self,
        stream: &str,
        records: Vec<CallbackEventInfo>,
        request_id: &str,
        dry_run: bool,
        now: SystemTime,
        seen: &mut HashMap<String, Option<i64>>,
        report: &mut Report,
    ) -> Result<(), SpoolError> {
        let mut found: Vec<(Record, Option<i64>)> = Vec::new();
        let mut gaps = Vec::new();
        for info in records {
            let event_time = info
                .event_time
                .as_deref()
                .and_then(|text| tencent_time::parse(text).ok());
            let provenance = Reconciled {
                event_time: event_time
                    .map_or_else(|| info.event_time.clone().unwrap_or_default(), utc),
                result_code: info.result_code,
                response: info.response.clone().filter(|text| !text.is_empty()),
                request_id: request_id.to_owned(),
            };
            match recover(info.request.as_deref(), provenance, now) {
                Ok(record) => {
                    let event_type = info.event_type.unwrap_or(record.event_type);
                    if !self.settings.event_types.contains(&event_type) || !self.wanted(&record) {
                        continue;
                    }
                    if let Some(earlier) = seen.get_mut(&record.id) {
                        // Another attempt at a callback already met: if
                        // any attempt succeeded, CSS counted it delivered.
                        if info.result_code == Some(0) {
                            *earlier = Some(0);
                        }
                        continue;
                    }
                    seen.insert(record.id.clone(), info.result_code);
                    report.counts(event_type).sent += 1;
                    found.push((record, info.result_code));
                }
                Err(unrecoverable) => {
                    let Some(event_type) = info
                        .event_type
                        .filter(|t| self.settings.event_types.contains(t))
                    else {
                        continue;
                    };
                    let counts = report.counts(event_type);
                    counts.sent += 1;
                    if info.result_code == Some(0) {
                        // CSS counted this attempt delivered: recordhook
                        // answered 200, which it does only once the
                        // callback is stored. Without a body it cannot be
                        // looked up, but it is not missing.
                        counts.present += 1;
                        self.observe(event_type, "present");
                        continue;
                    }
                    counts.unrecoverable += 1;
                    self.observe(event_type, "unrecoverable");
                    tracing::warn!(
                        stream,
                        event_type,
                        event = event_type_label(event_type),
                        event_time = info.event_time.as_deref(),
                        result_code = info.result_code,
                        request_id,
                        reason = unrecoverable.reason(),
                        detail = %unrecoverable,
                        "reconciliation found a callback CSS sent that cannot be recovered"
                    );
                    gaps.push(Gap {
                        stream: stream.to_owned(),
                        event_type,
                        event_time_ms: event_time.map_or(0, |secs| secs * 1000),
                        result_code: info.result_code,
                        request_id: request_id.to_owned(),
                        reason: unrecoverable.to_string(),
                        request_excerpt: excerpt(info.request.as_deref()),
                        found_at_ms: unix_ms(now),
                    });
                }
            }
        }
        if dry_run {
            let known = self
                .spool
                .known_event_ids(
                    found.iter().map(|(record, _)| record.id.clone()).collect(),
                    now,
                )
                .await?;
            for (record, _) in &found {
                let present = known.contains(&record.id);
                let result_code = seen.get(&record.id).copied().flatten();
                self.count_found(record, result_code, present, true, report);
            }
            return Ok(());
        }
        if !gaps.is_empty() {
            self.spool.record_gaps(gaps).await?;
        }
        // One page's records are stored together: concurrent acceptances
        // share the spool's group commit instead of paying one each.
        let new_records = found
            .iter()
            .map(|(record, _)| NewRecord::try_from(record))
            .collect::<Result<Vec<_>, _>>()?;
        let acceptances = futures_util::future::join_all(
            new_records
                .into_iter()
                .map(|record| self.spool.accept(record, now)),
        )
        .await;
        let mut recovered: HashSet<i64> = HashSet::new();
        for ((record, _), acceptance) in found.into_iter().zip(acceptances) {
            let present = acceptance? == Acceptance::Duplicate;
            let result_code = seen.get(&record.id).copied().flatten();
            if !present {
                recovered.insert(record.event_type);
                let reconciled = record.reconciled.as_deref();
                tracing::info!(
                    outcome = "recovered",
                    event_id = %record.id,
                    event_type = record.event_type,
                    event = event_type_label(record.event_type),
                    stream_id = record.stream_id(),
                    file_id = record.file_id(),
                    event_time = reconciled.map(|r| r.event_time.as_str()),
                    result_code,
                    request_id = reconciled.map(|r| r.request_id.as_str()),
                    "callback recovered by reconciliation"
                );
            }
            self.count_found(&record, result_code, present, false, report);
        }
        for event_type in recovered {
            (self.on_stored)(event_type);
        }
        Ok(())
    }

    /// Whether `record` is of a configured domain and app: callback records
    /// are asked for by stream name alone, and a stream of the same name
    /// may be pushed under a domain or app that is not reconciled. A record
    /// that names neither is kept.
    fn wanted(&self, record: &Record) -> bool {
        let allowed = |filter: &[String], value: &Option<String>| {
            filter.is_empty() || value.as_ref().is_none_or(|value| filter.contains(value))
        };
        allowed(&self.settings.domains, &record.stream.app)
            && allowed(&self.settings.app_names, &record.stream.appname)
    }

    /// Counts one parsed record as present, recovered or (dry run) missing.
    fn count_found(
        &self,
        record: &Record,
        result_code: Option<i64>,
        present: bool,
        dry_run: bool,
        report: &mut Report,
    ) {
        let event_type = record.event_type;
        let counts = report.counts(event_type);
        let outcome = if present {
            counts.present += 1;
            if result_code.is_some_and(|code| code != 0) {
                counts.failed_at_css_but_present += 1;
            }
            "present"
        } else if dry_run {
            counts.missing += 1;
            "missing"
        } else {
            counts.recovered += 1;
            "recovered"
        };
        self.observe(event_type, outcome);
    }

    fn observe(&self, event_type: i64, outcome: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_reconciled(event_type, outcome);
        }
    }
}

/// How listing one window went.
enum Listed {
    /// Every session in it was read.
    All,
    /// More sessions than one query may return.
    TooMany,
}

/// Why one window of one stream could not be read.
enum WindowError {
    Api(ApiError),
    Spool(SpoolError),
}

impl From<SpoolError> for WindowError {
    fn from(err: SpoolError) -> Self {
        Self::Spool(err)
    }
}

/// A page's paging fields, as Tencent answered them.
struct Paging {
    page_size: Option<i64>,
    total_num: Option<i64>,
    total_page: Option<i64>,
}

/// Whether page `page`, which held `received` entries when `asked` were
/// asked for, was the last. Tencent's `TotalPage` is trusted when it gives
/// one (a page shorter than asked is then not taken for the end: Tencent
/// may cap the page size below what was asked), else `TotalNum` over the
/// page size it answered with; with neither, a short page ends it. An empty
/// page always does.
fn last_page(page: i64, received: i64, asked: i64, paging: &Paging) -> bool {
    if received == 0 {
        return true;
    }
    let size = paging.page_size.filter(|size| *size > 0).unwrap_or(asked);
    let pages = paging.total_page.filter(|pages| *pages > 0).or_else(|| {
        paging
            .total_num
            .filter(|total| *total > 0)
            .map(|total| (total + size - 1) / size)
    });
    match pages {
        Some(pages) => page >= pages,
        None => received < size,
    }
}

/// Unix seconds as Tencent's UTC time text. Only instants beyond year 9999
/// cannot be written; Tencent refuses the number written instead.
fn utc(secs: i64) -> String {
    tencent_time::format_utc(secs).unwrap_or_else(|_| secs.to_string())
}

/// The lease name under which one replica at a time reconciles.
pub const LEASE_NAME: &str = "reconcile";

/// How long a replica's hold on reconciliation lasts without renewal (it
/// renews every third of it while it runs).
pub const LEASE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn paging(page_size: Option<i64>, total_num: Option<i64>, total_page: Option<i64>) -> Paging {
        Paging {
            page_size,
            total_num,
            total_page,
        }
    }

    #[test]
    fn a_page_shorter_than_asked_ends_the_listing_only_when_tencent_gives_no_total() {
        // TotalPage given: trusted, even when Tencent capped the page size.
        assert!(!last_page(1, 50, 100, &paging(None, None, Some(3))));
        assert!(last_page(3, 50, 100, &paging(None, None, Some(3))));
        // TotalNum over the page size Tencent answered with.
        assert!(!last_page(1, 50, 100, &paging(Some(50), Some(120), None)));
        assert!(last_page(3, 20, 100, &paging(Some(50), Some(120), None)));
        // Neither: a short page is the last, a full one is not.
        assert!(last_page(1, 99, 100, &paging(None, None, None)));
        assert!(!last_page(1, 100, 100, &paging(None, None, None)));
        // An empty page ends it whatever the totals say.
        assert!(last_page(1, 0, 100, &paging(None, Some(500), Some(5))));
    }
}
