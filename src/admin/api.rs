//! The admin API's handlers (JSON, under `/api/v1/`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AdminState;
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
        let body = Json(json!({"code": self.code(), "message": self.to_string()}));
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

/// `GET /api/v1/events` parameters, as given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    stream_id: Option<String>,
    file_id: Option<String>,
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    status: Option<String>,
    source: Option<String>,
    limit: Option<usize>,
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
#[derive(Debug, Serialize)]
struct SinkView<'a> {
    sink: &'a str,
    status: DeliveryStatus,
    attempts: u32,
    last_error: Option<&'a str>,
    last_attempt_at: Option<String>,
    next_attempt_at: Option<String>,
}

impl<'a> From<&'a SinkDelivery> for SinkView<'a> {
    fn from(delivery: &'a SinkDelivery) -> Self {
        Self {
            sink: &delivery.sink,
            status: delivery.status,
            attempts: delivery.attempts,
            last_error: delivery.last_error.as_deref(),
            last_attempt_at: delivery.last_attempt_ms.map(format_ms),
            next_attempt_at: delivery.next_attempt_ms.map(format_ms),
        }
    }
}

fn summary_json(summary: &EventSummary) -> Value {
    let sinks: Vec<SinkView<'_>> = summary.sinks.iter().map(SinkView::from).collect();
    json!({
        "id": summary.id,
        "received_at": format_ms(summary.received_at_ms),
        "event_type": summary.event_type,
        "event_name": event_type_name(summary.event_type),
        "stream_id": summary.stream_id,
        "file_id": summary.file_id,
        "status": summary.status(),
        "source": summary.source.as_str(),
        "sinks": sinks,
    })
}

/// `GET /api/v1/events`: newest first, filtered, by cursor.
pub async fn events(
    State(state): State<AdminState>,
    params: Result<Query<EventsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let Query(params) = params.map_err(|err| bad("query", err.body_text()))?;
    let query = params.query()?;
    let limit = query.limit;
    let page = state.app.spool.events(query).await?;
    let next_cursor = (page.len() == limit)
        .then(|| page.last().map(|last| last.seq.to_string()))
        .flatten();
    let items: Vec<Value> = page.iter().map(summary_json).collect();
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})))
}

/// `GET /api/v1/events/{id}`: the record whole and each sink's delivery.
pub async fn event(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let detail = state
        .app
        .spool
        .event(&id)
        .await?
        .ok_or(AdminError::EventNotFound(id))?;
    let mut body = summary_json(&detail.summary);
    let record: Value = serde_json::from_str(&detail.body).map_err(SpoolError::unreadable)?;
    body["record"] = record;
    Ok(Json(body))
}

/// `GET /api/v1/sinks`: each sink with its backlog and last activity.
pub async fn sinks(State(state): State<AdminState>) -> Result<Json<Value>, AdminError> {
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
        out.push(json!({
            "name": sink.name,
            "type": sink.kind,
            "event_types": sink.event_types.listed(),
            "pending": counts.pending,
            "dead": counts.dead,
            "last_success_at": last_success_ms.map(format_ms),
            "last_failure_at": last_failure_ms.map(format_ms),
            "last_error": last_error,
            "backlog": state.backlog.of(&sink.name),
        }));
    }
    Ok(Json(json!({"sinks": out})))
}

/// `GET /api/v1/reconciliation` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationParams {
    /// Most runs to show (default 20, at most 1000).
    runs: Option<usize>,
    /// Most gaps to show (default 100, at most 1000).
    gaps: Option<usize>,
}

/// `GET /api/v1/reconciliation`: how it is set up, its last runs (newest
/// first, each with its report), and the callbacks it could not recover.
pub async fn reconciliation(
    State(state): State<AdminState>,
    params: Result<Query<ReconciliationParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let Query(params) = params.map_err(|err| bad("query", err.body_text()))?;
    let bounded = |field: &'static str, value: Option<usize>, default: usize| match value {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(bad(field, "must be between 1 and 1000")),
    };
    let run_limit = bounded("runs", params.runs, 20)?;
    let gap_limit = bounded("gaps", params.gaps, 100)?;
    let spool = &state.app.spool;
    let runs: Vec<Value> = spool
        .reconcile_runs(run_limit)
        .await?
        .into_iter()
        .map(|run| {
            json!({
                "id": run.id,
                "holder": run.holder,
                "started_at": format_ms(run.started_at_ms),
                "finished_at": run.finished_at_ms.map(format_ms),
                "window_start": format_ms(run.window_start_ms),
                "window_end": format_ms(run.window_end_ms),
                "status": run.status,
                "error": run.error,
                "report": serde_json::from_str::<Value>(&run.report).unwrap_or(Value::Null),
            })
        })
        .collect();
    let gaps: Vec<Value> = spool
        .gaps(gap_limit)
        .await?
        .into_iter()
        .map(|gap| {
            json!({
                "stream": gap.stream,
                "event_type": gap.event_type,
                "event_name": event_type_name(gap.event_type),
                "event_time": format_ms(gap.event_time_ms),
                "result_code": gap.result_code,
                "request_id": gap.request_id,
                "reason": gap.reason,
                "request_excerpt": gap.request_excerpt,
                "found_at": format_ms(gap.found_at_ms),
            })
        })
        .collect();
    let gap_count = spool.gap_count().await?;
    Ok(Json(json!({
        "settings": *state.reconcile,
        "runs": runs,
        "gaps": gaps,
        "gap_count": gap_count,
    })))
}

/// Which dead letters a retry or purge acts on (the CLI's selection).
#[derive(Debug, Deserialize)]
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

/// `POST /api/v1/dead-letters/retry`: queue dead letters again.
pub async fn retry(
    State(state): State<AdminState>,
    body: Result<Json<Selection>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, AdminError> {
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
    Ok(Json(json!({"affected": affected})))
}

/// `POST /api/v1/dead-letters/purge`: give dead letters up for good.
pub async fn purge(
    State(state): State<AdminState>,
    body: Result<Json<Selection>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let selection = selection(body)?;
    let affected = selection
        .apply(|sink, id| state.app.spool.purge_dead(sink, id))
        .await?;
    tracing::info!(affected, sink = ?selection.sink, "dead letters purged from the admin API");
    Ok(Json(json!({"affected": affected})))
}
