//! Pages of records for the admin API, from the PostgreSQL spool: every
//! (record, sink) has its row, so a status is read, never inferred.

use tokio_postgres::types::ToSql;

use super::{PgSpool, newest_seq_of};
use crate::record::Source;
use crate::spool::SpoolError;
use crate::spool::browse::{
    DeliveryStatus, EventDetail, EventQuery, EventSummary, SinkDelivery, source_from_stored,
};

/// An SQL condition on `records r` selecting the records of `status`.
fn status_condition(status: DeliveryStatus) -> &'static str {
    match status {
        // Dead letters are few: start from their index.
        DeliveryStatus::Dead => "r.seq IN (SELECT seq FROM deliveries WHERE state = 'dead')",
        DeliveryStatus::Pending => {
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = r.seq AND d.state = 'pending')
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = r.seq AND d.state = 'dead')"
        }
        DeliveryStatus::Delivered => {
            "NOT EXISTS (SELECT 1 FROM deliveries d
                         WHERE d.seq = r.seq AND d.state IN ('pending', 'dead'))"
        }
    }
}

/// An SQL condition on `records r` selecting the records of `source`. The
/// value is written into the statement, not bound, so that the planner can
/// use the partial index `records_reconciled` in a generic plan too.
fn source_condition(source: Source) -> &'static str {
    match source {
        Source::Reconciled => "r.source = 'reconciled'",
        // Records stored before the column existed, or by older replicas,
        // are NULL, and live.
        Source::Live => "(r.source IS NULL OR r.source = 'live')",
    }
}

impl PgSpool {
    /// A page of records matching `query`, newest first.
    pub async fn events(&self, query: EventQuery) -> Result<Vec<EventSummary>, SpoolError> {
        let clock = &self.inner.clock;
        let before = query.before_seq.unwrap_or(i64::MAX);
        let since = query.since_ms.map(|ms| clock.to_db(ms));
        let until = query.until_ms.map(|ms| clock.to_db(ms));
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let mut conditions = vec!["r.seq < $1".to_owned()];
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&before];
        // Conditions and their values, numbered in the order they are added.
        let mut numbered: Vec<(&str, &(dyn ToSql + Sync))> = Vec::new();
        if let Some(stream_id) = &query.stream_id {
            numbered.push(("r.stream_id = ", stream_id));
        }
        if let Some(file_id) = &query.file_id {
            numbered.push(("r.file_id = ", file_id));
        }
        if let Some(event_type) = &query.event_type {
            numbered.push(("r.event_type = ", event_type));
        }
        if let Some(since) = &since {
            numbered.push(("r.received_at_ms >= ", since));
        }
        if let Some(until) = &until {
            numbered.push(("r.received_at_ms < ", until));
        }
        // The time conditions, also bounding the seq range: see below.
        let mut window = Vec::new();
        for (condition, value) in numbered {
            values.push(value);
            let condition = format!("{condition}${}", values.len());
            if condition.starts_with("r.received_at_ms") {
                window.push(condition.replacen("r.", "", 1));
            }
            conditions.push(condition);
        }
        if !window.is_empty() {
            // Seq and received time rise together, which the planner cannot
            // know: for a window it walked back through every newer record
            // (460 ms for an hour in the middle of a million records). The
            // window's last seq, from the (received_at_ms, seq) index, bounds
            // the walk (4 ms). `seq + 0` keeps max() from turning back into
            // that walk.
            conditions.push(format!(
                "r.seq <= (SELECT max(seq + 0) FROM records WHERE seq < $1 AND {})",
                window.join(" AND ")
            ));
        }
        if let Some(status) = query.status {
            conditions.push(status_condition(status).to_owned());
        }
        if let Some(source) = query.source {
            conditions.push(source_condition(source).to_owned());
        }
        values.push(&limit);
        let sql = format!(
            "SELECT r.seq, r.event_id, r.event_type, r.received_at_ms, r.stream_id, r.file_id,
                    r.source
             FROM records r WHERE {} ORDER BY r.seq DESC LIMIT ${}",
            conditions.join(" AND "),
            values.len()
        );
        let client = self.client().await?;
        let rows = client
            .query(&sql, &values)
            .await
            .map_err(SpoolError::read)?;
        let mut page: Vec<EventSummary> = rows
            .iter()
            .map(|row| EventSummary {
                seq: row.get(0),
                id: row.get(1),
                event_type: row.get(2),
                received_at_ms: clock.local_ms(row.get(3)),
                stream_id: row.get(4),
                file_id: row.get(5),
                source: source_from_stored(row.get(6)),
                sinks: Vec::new(),
            })
            .collect();
        self.fill_sinks(&client, &mut page).await?;
        Ok(page)
    }

    /// Adds to each of `page` its deliveries.
    async fn fill_sinks(
        &self,
        client: &tokio_postgres::Client,
        page: &mut [EventSummary],
    ) -> Result<(), SpoolError> {
        let seqs: Vec<i64> = page.iter().map(|summary| summary.seq).collect();
        let rows = client
            .query(
                "SELECT seq, sink, state, attempts, last_error, last_attempt_ms, next_attempt_ms
                 FROM deliveries WHERE seq = ANY ($1) ORDER BY seq, sink",
                &[&seqs],
            )
            .await
            .map_err(SpoolError::read)?;
        let clock = &self.inner.clock;
        for row in &rows {
            let seq: i64 = row.get(0);
            let Some(summary) = page.iter_mut().find(|summary| summary.seq == seq) else {
                continue;
            };
            let status = DeliveryStatus::from_stored(row.get(2));
            summary.sinks.push(SinkDelivery {
                sink: row.get(1),
                status,
                attempts: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
                last_error: row.get(4),
                last_attempt_ms: row.get::<_, Option<i64>>(5).map(|ms| clock.local_ms(ms)),
                next_attempt_ms: (status == DeliveryStatus::Pending)
                    .then(|| clock.local_ms(row.get(6))),
            });
        }
        Ok(())
    }

    /// The latest record with event id `id`, whole.
    pub async fn event(&self, id: &str) -> Result<Option<EventDetail>, SpoolError> {
        let client = self.client().await?;
        let Some(seq) = newest_seq_of(&client, id).await.map_err(SpoolError::read)? else {
            return Ok(None);
        };
        let Some(row) = client
            .query_opt(
                "SELECT seq, event_id, event_type, received_at_ms, stream_id, file_id, source, body
                 FROM records WHERE seq = $1",
                &[&seq],
            )
            .await
            .map_err(SpoolError::read)?
        else {
            return Ok(None);
        };
        let mut page = [EventSummary {
            seq: row.get(0),
            id: row.get(1),
            event_type: row.get(2),
            received_at_ms: self.inner.clock.local_ms(row.get(3)),
            stream_id: row.get(4),
            file_id: row.get(5),
            source: source_from_stored(row.get(6)),
            sinks: Vec::new(),
        }];
        self.fill_sinks(&client, &mut page).await?;
        let [summary] = page;
        Ok(Some(EventDetail {
            summary,
            body: row.get(7),
        }))
    }
}
