//! The admin API's handlers (JSON, under `/api/v1/`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::backlog::Sample;
use super::openapi::{BodyFailures, ErrorBody, GetFailures, QueryFailures};
use super::{AdminState, ReconcileInfo};
use crate::metrics::SinkActivity;
use crate::protocol::{EventTypes, event_type_name};
use crate::record::Source;
use crate::spool::browse::{DeliveryStatus, EventQuery, EventSummary, SinkDelivery};
use crate::spool::{SpoolError, format_ms};

/// Records per page unless asked otherwise.
const DEFAULT_LIMIT: usize = 50;
/// Most records per page.
const MAX_LIMIT: usize = 500;

/// Why an admin request failed; each with its own status and code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A query parameter or body field is not valid.
    #[error("invalid `{field}`: {reason}")]
    BadRequest {
        /// The parameter.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No record has this event id.
    #[error("no record with event id `{0}` is in the spool")]
    EventNotFound(String),
    /// No such endpoint.
    #[error("no such admin endpoint")]
    NotFound,
    /// The spool could not answer.
    #[error("the spool could not answer: {0}")]
    Spool(#[from] SpoolError),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::EventNotFound(_) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::Spool(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> u16 {
        match self {
            Self::BadRequest { .. } => 4006,
            Self::EventNotFound(_) => 4041,
            Self::NotFound => 4040,
            Self::Spool(_) => 5031,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if matches!(self, Self::Spool(_)) {
            tracing::error!(error = %self, "admin API request failed");
        }
        let body = Json(ErrorBody {
            code: self.code(),
            message: self.to_string(),
        });
        (self.status(), body).into_response()
    }
}

/// Unknown admin paths.
pub async fn not_found() -> AdminError {
    AdminError::NotFound
}

fn bad(field: &'static str, reason: impl Into<String>) -> AdminError {
    AdminError::BadRequest {
        field,
        reason: reason.into(),
    }
}

/// `GET /api/v1/events` parameters, as given (an empty one is no filter).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Only this stream's records.
    stream_id: Option<String>,
    /// Only this VOD file's records.
    file_id: Option<String>,
    /// Only this event type: its number (e.g. `100`) or name (`record`).
    event_type: Option<String>,
    /// Received at or after this RFC 3339 time.
    #[param(example = "2026-11-21T08:00:00Z")]
    since: Option<String>,
    /// Received before this RFC 3339 time.
    #[param(example = "2026-11-21T09:00:00Z")]
    until: Option<String>,
    /// Only records with this overall status.
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// Only records that arrived this way.
    #[param(value_type = Option<Source>)]
    source: Option<String>,
    /// Records per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^-?[0-9]+$")]
    cursor: Option<String>,
}

fn rfc3339_ms(field: &'static str, text: &str) -> Result<i64, AdminError> {
    humantime::parse_rfc3339_weak(text)
        .map(crate::spool::unix_ms)
        .map_err(|err| {
            bad(
                field,
                format!("not an RFC 3339 time ({err}), e.g. 2026-11-21T08:00:00Z"),
            )
        })
}

impl EventsParams {
    fn query(self) -> Result<EventQuery, AdminError> {
        let filled = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let event_type = match filled(self.event_type) {
            None => None,
            Some(text) => match EventTypes::parse_item(&text) {
                Ok(Some(number)) => Some(number),
                Ok(None) => None,
                Err(reason) => return Err(bad("event_type", reason)),
            },
        };
        let status = match filled(self.status).as_deref() {
            None => None,
            Some("pending") => Some(DeliveryStatus::Pending),
            Some("delivered") => Some(DeliveryStatus::Delivered),
            Some("dead") => Some(DeliveryStatus::Dead),
            Some(other) => {
                return Err(bad(
                    "status",
                    format!("`{other}` is not one of pending, delivered, dead"),
                ));
            }
        };
        let source = match filled(self.source).as_deref() {
            None => None,
            Some("live") => Some(Source::Live),
            Some("reconciled") => Some(Source::Reconciled),
            Some(other) => {
                return Err(bad(
                    "source",
                    format!("`{other}` is not one of live, reconciled"),
                ));
            }
        };
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(bad("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let before_seq = filled(self.cursor)
            .map(|cursor| {
                cursor
                    .parse::<i64>()
                    .map_err(|_| bad("cursor", "use the next_cursor of the previous page"))
            })
            .transpose()?;
        Ok(EventQuery {
            stream_id: filled(self.stream_id),
            file_id: filled(self.file_id),
            event_type,
            since_ms: filled(self.since)
                .map(|t| rfc3339_ms("since", &t))
                .transpose()?,
            until_ms: filled(self.until)
                .map(|t| rfc3339_ms("until", &t))
                .transpose()?,
            status,
            source,
            before_seq,
            limit,
        })
    }
}

/// One sink's delivery of a record, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SinkView {
    /// The sink's name.
    sink: String,
    /// Where the record stands with it.
    status: DeliveryStatus,
    /// Failed attempts so far.
    attempts: u32,
    /// The last attempt's error, if it failed.
    last_error: Option<String>,
    /// When it was last attempted (RFC 3339).
    last_attempt_at: Option<String>,
    /// When a waiting retry is due (RFC 3339).
    next_attempt_at: Option<String>,
}

impl From<&SinkDelivery> for SinkView {
    fn from(delivery: &SinkDelivery) -> Self {
        Self {
            sink: delivery.sink.clone(),
            status: delivery.status,
            attempts: delivery.attempts,
            last_error: delivery.last_error.clone(),
            last_attempt_at: delivery.last_attempt_ms.map(format_ms),
            next_attempt_at: delivery.next_attempt_ms.map(format_ms),
        }
    }
}

/// One record in a page of `GET /api/v1/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Its event id.
    id: String,
    /// When recordhook accepted it (RFC 3339).
    received_at: String,
    /// Its event type's number.
    event_type: i64,
    /// Its event type's name, when it has one.
    event_name: Option<&'static str>,
    /// Its stream, when known.
    stream_id: Option<String>,
    /// Its VOD file id, when known.
    file_id: Option<String>,
    /// Where it stands overall: dead if any sink has it dead, else pending
    /// if any waits, else delivered.
    status: DeliveryStatus,
    /// How it reached recordhook.
    source: Source,
    /// Where it stands with each sink that takes its type.
    sinks: Vec<SinkView>,
}

impl From<&EventSummary> for EventView {
    fn from(summary: &EventSummary) -> Self {
        Self {
            id: summary.id.clone(),
            received_at: format_ms(summary.received_at_ms),
            event_type: summary.event_type,
            event_name: event_type_name(summary.event_type),
            stream_id: summary.stream_id.clone(),
            file_id: summary.file_id.clone(),
            status: summary.status(),
            source: summary.source,
            sinks: summary.sinks.iter().map(SinkView::from).collect(),
        }
    }
}

/// A page of records, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The records.
    items: Vec<EventView>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// One record whole (`GET /api/v1/events/{id}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventRecord {
    /// What a page shows of it.
    #[serde(flatten)]
    summary: EventView,
    /// The record as sinks receive it.
    #[schema(value_type = Object)]
    record: Value,
}

/// `GET /api/v1/events`: newest first, filtered, by cursor.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    params(EventsParams),
    responses((status = 200, description = "A page of records", body = EventPage), QueryFailures),
)]
pub async fn events(
    State(state): State<AdminState>,
    params: Result<Query<EventsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventPage>, AdminError> {
    let Query(params) = params.map_err(|err| bad("query", err.body_text()))?;
    let query = params.query()?;
    let limit = query.limit;
    let page = state.app.spool.events(query).await?;
    let next_cursor = (page.len() == limit)
        .then(|| page.last().map(|last| last.seq.to_string()))
        .flatten();
    let items = page.iter().map(EventView::from).collect();
    Ok(Json(EventPage { items, next_cursor }))
}

/// `GET /api/v1/events/{id}`: the record whole and each sink's delivery.
#[utoipa::path(
    get,
    path = "/api/v1/events/{id}",
    params(("id" = String, Path, description = "The record's event id")),
    responses(
        (status = 200, description = "The record", body = EventRecord),
        (status = 404, description = "No record has this event id", body = ErrorBody),
        GetFailures,
    ),
)]
pub async fn event(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<EventRecord>, AdminError> {
    let detail = state
        .app
        .spool
        .event(&id)
        .await?
        .ok_or(AdminError::EventNotFound(id))?;
    let record: Value = serde_json::from_str(&detail.body).map_err(SpoolError::unreadable)?;
    Ok(Json(EventRecord {
        summary: EventView::from(&detail.summary),
        record,
    }))
}

/// One sink, its backlog and last activity.
#[derive(Debug, Serialize, ToSchema)]
pub struct SinkStatus {
    /// Its name.
    name: String,
    /// Its type (`file`, `forward`, …).
    #[serde(rename = "type")]
    kind: &'static str,
    /// The event types it takes; null: all of them.
    event_types: Option<Vec<i64>>,
    /// Deliveries waiting.
    pending: u64,
    /// Dead letters.
    dead: u64,
    /// Its last delivery (RFC 3339), since the server started.
    last_success_at: Option<String>,
    /// Its last failed attempt (RFC 3339), since the server started.
    last_failure_at: Option<String>,
    /// Its last failed attempt's error.
    last_error: Option<String>,
    /// Pending deliveries, sampled each minute over the last hour.
    backlog: Vec<Sample>,
}

/// `GET /api/v1/sinks`' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SinkList {
    /// Each configured sink.
    sinks: Vec<SinkStatus>,
}

/// `GET /api/v1/sinks`: each sink with its backlog and last activity.
#[utoipa::path(
    get,
    path = "/api/v1/sinks",
    responses((status = 200, description = "The configured sinks", body = SinkList), GetFailures),
)]
pub async fn sinks(State(state): State<AdminState>) -> Result<Json<SinkList>, AdminError> {
    let mut out = Vec::with_capacity(state.sinks.len());
    for sink in state.sinks.iter() {
        let counts = state
            .app
            .spool
            .counts(&sink.name, &sink.event_types)
            .await?;
        let SinkActivity {
            last_success_ms,
            last_failure_ms,
            last_error,
        } = state.app.metrics.sink_activity(&sink.name);
        out.push(SinkStatus {
            name: sink.name.clone(),
            kind: sink.kind,
            event_types: sink.event_types.listed().map(<[i64]>::to_vec),
            pending: counts.pending,
            dead: counts.dead,
            last_success_at: last_success_ms.map(format_ms),
            last_failure_at: last_failure_ms.map(format_ms),
            last_error,
            backlog: state.backlog.of(&sink.name),
        });
    }
    Ok(Json(SinkList { sinks: out }))
}

/// `GET /api/v1/reconciliation` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReconciliationParams {
    /// Most runs to show (default 20).
    #[param(minimum = 1, maximum = 1000)]
    runs: Option<usize>,
    /// Most gaps to show (default 100).
    #[param(minimum = 1, maximum = 1000)]
    gaps: Option<usize>,
}

/// One reconciliation run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// Its number.
    id: i64,
    /// The replica that ran it.
    holder: String,
    /// When it started (RFC 3339).
    started_at: String,
    /// When it finished (RFC 3339); null while it runs.
    finished_at: Option<String>,
    /// The start of the window it checked (RFC 3339).
    window_start: String,
    /// The end of the window it checked (RFC 3339).
    window_end: String,
    /// `running`, `ok` or `failed`.
    status: String,
    /// Why it failed.
    error: Option<String>,
    /// What it found (null when not readable).
    #[schema(value_type = Object)]
    report: Value,
}

/// A callback reconciliation could not recover.
#[derive(Debug, Serialize, ToSchema)]
pub struct GapView {
    /// The stream.
    stream: String,
    /// Its event type's number.
    event_type: i64,
    /// Its event type's name, when it has one.
    event_name: Option<&'static str>,
    /// When the event happened (RFC 3339).
    event_time: String,
    /// Tencent's result code for the callback, when known.
    result_code: Option<i64>,
    /// Tencent's request id.
    request_id: String,
    /// Why it could not be recovered.
    reason: String,
    /// The start of the callback as Tencent kept it.
    request_excerpt: String,
    /// When it was found (RFC 3339).
    found_at: String,
}

/// `GET /api/v1/reconciliation`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReconciliationView {
    /// How reconciliation is set up.
    settings: ReconcileInfo,
    /// Its last runs, newest first.
    runs: Vec<RunView>,
    /// Callbacks it could not recover, newest first.
    gaps: Vec<GapView>,
    /// How many such callbacks there are in all.
    gap_count: u64,
}

/// `GET /api/v1/reconciliation`: how it is set up, its last runs (newest
/// first, each with its report), and the callbacks it could not recover.
#[utoipa::path(
    get,
    path = "/api/v1/reconciliation",
    params(ReconciliationParams),
    responses(
        (status = 200, description = "Set-up, runs and gaps", body = ReconciliationView),
        QueryFailures,
    ),
)]
pub async fn reconciliation(
    State(state): State<AdminState>,
    params: Result<Query<ReconciliationParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReconciliationView>, AdminError> {
    let Query(params) = params.map_err(|err| bad("query", err.body_text()))?;
    let bounded = |field: &'static str, value: Option<usize>, default: usize| match value {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(bad(field, "must be between 1 and 1000")),
    };
    let run_limit = bounded("runs", params.runs, 20)?;
    let gap_limit = bounded("gaps", params.gaps, 100)?;
    let spool = &state.app.spool;
    let runs = spool
        .reconcile_runs(run_limit)
        .await?
        .into_iter()
        .map(|run| RunView {
            id: run.id,
            holder: run.holder,
            started_at: format_ms(run.started_at_ms),
            finished_at: run.finished_at_ms.map(format_ms),
            window_start: format_ms(run.window_start_ms),
            window_end: format_ms(run.window_end_ms),
            status: run.status,
            error: run.error,
            report: serde_json::from_str::<Value>(&run.report).unwrap_or(Value::Null),
        })
        .collect();
    let gaps = spool
        .gaps(gap_limit)
        .await?
        .into_iter()
        .map(|gap| GapView {
            stream: gap.stream,
            event_type: gap.event_type,
            event_name: event_type_name(gap.event_type),
            event_time: format_ms(gap.event_time_ms),
            result_code: gap.result_code,
            request_id: gap.request_id,
            reason: gap.reason,
            request_excerpt: gap.request_excerpt,
            found_at: format_ms(gap.found_at_ms),
        })
        .collect();
    let gap_count = spool.gap_count().await?;
    Ok(Json(ReconciliationView {
        settings: (*state.reconcile).clone(),
        runs,
        gaps,
        gap_count,
    }))
}

/// Which dead letters a retry or purge acts on (the CLI's selection):
/// either `ids` or `"all": true`, optionally narrowed to one `sink`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Only this sink's.
    sink: Option<String>,
    /// These event ids' dead letters.
    #[serde(default)]
    ids: Vec<String>,
    /// Every dead letter (of `sink`, when given).
    #[serde(default)]
    all: bool,
}

impl Selection {
    /// The event ids to act on, one `None` for "all"; refuses an empty or
    /// double selection, so nothing is retried or purged by accident.
    fn targets(&self) -> Result<Vec<Option<String>>, AdminError> {
        match (self.all, self.ids.is_empty()) {
            (true, true) => Ok(vec![None]),
            (false, false) => Ok(self.ids.iter().cloned().map(Some).collect()),
            (true, false) => Err(bad("all", "give either `ids` or `all`, not both")),
            (false, true) => Err(bad("ids", "give the event ids, or `\"all\": true`")),
        }
    }

    /// Runs `act` (a retry or a purge: sink, event id or all) on each target
    /// and adds up how many dead letters it affected.
    async fn apply<F, Fut>(&self, act: F) -> Result<usize, AdminError>
    where
        F: Fn(Option<String>, Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<usize, SpoolError>>,
    {
        let mut affected = 0;
        for id in self.targets()? {
            affected += act(self.sink.clone(), id).await?;
        }
        Ok(affected)
    }
}

fn selection(
    body: Result<Json<Selection>, axum::extract::rejection::JsonRejection>,
) -> Result<Selection, AdminError> {
    body.map(|Json(selection)| selection)
        .map_err(|err| bad("body", err.body_text()))
}

/// How many dead letters a retry or purge acted on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Affected {
    /// Dead letters queued again or purged.
    affected: usize,
}

/// `POST /api/v1/dead-letters/retry`: queue dead letters again.
#[utoipa::path(
    post,
    path = "/api/v1/dead-letters/retry",
    request_body = Selection,
    responses((status = 200, description = "Dead letters queued again", body = Affected), BodyFailures),
)]
pub async fn retry(
    State(state): State<AdminState>,
    body: Result<Json<Selection>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Affected>, AdminError> {
    let selection = selection(body)?;
    let affected = selection
        .apply(|sink, id| {
            state
                .app
                .spool
                .requeue_dead(sink, id, std::time::SystemTime::now())
        })
        .await?;
    tracing::info!(affected, sink = ?selection.sink, "dead letters queued again from the admin API");
    state.app.wake_all_sinks();
    Ok(Json(Affected { affected }))
}

/// `POST /api/v1/dead-letters/purge`: give dead letters up for good.
#[utoipa::path(
    post,
    path = "/api/v1/dead-letters/purge",
    request_body = Selection,
    responses((status = 200, description = "Dead letters purged", body = Affected), BodyFailures),
)]
pub async fn purge(
    State(state): State<AdminState>,
    body: Result<Json<Selection>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Affected>, AdminError> {
    let selection = selection(body)?;
    let affected = selection
        .apply(|sink, id| state.app.spool.purge_dead(sink, id))
        .await?;
    tracing::info!(affected, sink = ?selection.sink, "dead letters purged from the admin API");
    Ok(Json(Affected { affected }))
}
