//! Building and running the service: open the spool, build the sinks, bind
//! the listener (port 0 works, for tests), serve until told to stop, then shut
//! down in order: stop accepting, finish in-flight requests within a bound,
//! stop the delivery workers, close the spool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::stream::{self, Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::configuration::spool::SpoolBackend;
use crate::configuration::{ConfigError, Settings};
use crate::delivery;
use crate::http::{self, AppState, ServeOptions, SinkRoute};
use crate::metrics::Metrics;
use crate::protocol::Authenticator;
use crate::reconcile::{self, Reconciler};
use crate::sinks::{self, ConfiguredSink, SinkBuildError};
use crate::spool::{OnStored, SinkRegistration, Spool, SpoolError, unix_ms};
use crate::supervisor::{WorkerHealth, supervise};
use crate::tls::{self, TlsError};

/// How often delivered records past retention and stale dedup entries are removed.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

/// Rows removed per maintenance transaction (records: about 20 ms of the
/// writer's time each), so callbacks queued behind a large purge wait little.
const PURGE_BATCH: usize = 1_000;

/// Connections the admin listener serves at once: a few operators and a scraper.
const ADMIN_CONNECTIONS: usize = 64;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A sink could not be built.
    #[error(transparent)]
    Sink(#[from] SinkBuildError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Reconciliation could not be set up (its credentials or its endpoint).
    #[error("reconciliation could not be set up: {0}")]
    Reconcile(String),
    /// The listen address could not be bound.
    #[error("could not listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Produces the authenticator to use after a SIGHUP (keys re-read).
pub type KeyReloader = Box<dyn Fn() -> Result<Authenticator, ConfigError> + Send + Sync>;

/// A built, bound, not yet running service.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    /// The admin listener and its bound address, when configured.
    admin: Option<(TcpListener, SocketAddr)>,
    state: AppState,
    sinks: Vec<(Arc<ConfiguredSink>, Arc<Notify>)>,
    serve_options: ServeOptions,
    reload_keys: KeyReloader,
    settings: Settings,
    /// The reconciler, when `[reconcile] enabled`.
    reconciler: Option<Arc<Reconciler>>,
}

impl Application {
    /// Opens the spool, builds the sinks and TLS, and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let authenticator = settings.auth.authenticator()?;
        if !authenticator.is_signed() {
            tracing::warn!(
                "auth.allow_unsigned is set: callbacks are NOT authenticated; anyone who can reach this port can inject records"
            );
        }
        let tls = settings
            .server
            .tls
            .as_ref()
            .map(tls::acceptor)
            .transpose()?;
        let spool = Spool::open(&settings.spool.options()).await?;
        let sinks: Vec<(Arc<ConfiguredSink>, Arc<Notify>)> = sinks::build(&settings.sinks)?
            .into_iter()
            .map(|sink| (Arc::new(sink), Arc::new(Notify::new())))
            .collect();
        let routes = sinks
            .iter()
            .map(|(sink, wake)| SinkRoute {
                name: sink.name.clone(),
                event_types: sink.event_types.clone(),
                wake: Arc::clone(wake),
            })
            .collect();
        let registered = sinks
            .iter()
            .map(|(sink, _)| SinkRegistration {
                name: sink.name.clone(),
                event_types: sink.event_types.clone(),
                single_writer: sink.sink.single_writer(),
            })
            .collect();
        for (sink, count) in spool.register_sinks(registered, SystemTime::now()).await? {
            tracing::warn!(
                sink = %sink,
                count,
                "sink is no longer configured: its undelivered records are now dead letters \
                 (restore the sink and run `recordhook dead-letters retry`, or purge them)"
            );
        }
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .map_err(|source| StartupError::Bind {
                address: settings.server.listen,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| StartupError::Bind {
            address: settings.server.listen,
            source,
        })?;
        let admin = match settings.admin.address()? {
            None => None,
            Some(wanted) => {
                let bind_error = |source| StartupError::Bind {
                    address: wanted,
                    source,
                };
                let listener = TcpListener::bind(wanted).await.map_err(bind_error)?;
                let bound = listener.local_addr().map_err(bind_error)?;
                tracing::info!(address = %bound, "admin listener (API, console, /metrics)");
                Some((listener, bound))
            }
        };
        tracing::info!(
            %address,
            tls = tls.is_some(),
            callback_path = %settings.server.callback_path,
            spool = %settings.spool.location(),
            keys = authenticator.key_count(),
            path_secret = settings.auth.path_secret.is_some(),
            unsigned_event_types = ?settings.auth.unsigned_event_types,
            sinks = ?settings.sinks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            version = env!("CARGO_PKG_VERSION"),
            "recordhook listening"
        );
        let metrics = Metrics::new();
        let state = AppState::new(
            authenticator,
            spool,
            routes,
            settings.server.max_body_bytes,
            Duration::from_secs(settings.server.request_timeout_secs),
            Arc::clone(&metrics),
            WorkerHealth::new(),
        )
        .with_path_secret(settings.auth.path_secret.clone());
        if settings.reconcile.enabled
            && settings.reconcile.lag_secs < reconcile::settings::CSS_RETRY_HORIZON_SECS
        {
            tracing::warn!(
                lag_secs = settings.reconcile.lag_secs,
                "reconcile.lag_secs is shorter than CSS's retry horizon (about 12 minutes): a \
                 callback CSS is still retrying may be recovered first (then the retry is a \
                 duplicate)"
            );
        }
        let reconciler = if settings.reconcile.enabled {
            let woken = state.clone();
            Some(Arc::new(
                reconcile::build(
                    &settings.reconcile,
                    state.spool.clone(),
                    Duration::from_secs(settings.spool.dedup_window_secs),
                    Some(metrics),
                    Arc::new(move |event_type| woken.wake_sinks(event_type)),
                )
                .map_err(StartupError::Reconcile)?,
            ))
        } else {
            None
        };
        let serve_options = ServeOptions {
            max_connections: settings.server.max_connections,
            header_read_timeout: Duration::from_secs(settings.server.header_read_timeout_secs),
            tls,
        };
        let auth = settings.auth.clone();
        Ok(Self {
            listener,
            address,
            admin,
            state,
            sinks,
            serve_options,
            reload_keys: Box::new(move || auth.authenticator()),
            settings,
            reconciler,
        })
    }

    /// Replaces how keys are re-read on SIGHUP. By default the `auth` settings
    /// given to [`Application::build`] are kept and only `key_file` is re-read;
    /// the command line reloads the whole configuration instead.
    pub fn with_key_reloader(mut self, reload_keys: KeyReloader) -> Self {
        self.reload_keys = reload_keys;
        self
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The admin listener's bound address, when there is one.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, address)| *address)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Handler state, e.g. to reload keys.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until the first of `stops` (or their end), then shuts down in
    /// order. A second stop during `server.shutdown_delay_secs` ends the
    /// delay (an operator's second Ctrl-C or SIGTERM: stop now); the drain
    /// of in-flight requests and the workers' grace still follow, so nothing
    /// answered 200 is cut short. The end of `stops` never counts as a second.
    pub async fn run_until_stopped<S>(self, mut stops: S) -> Result<(), StartupError>
    where
        S: Stream<Item = ()> + Send + Unpin + 'static,
    {
        let Self {
            listener,
            admin,
            state,
            sinks,
            serve_options,
            reload_keys,
            settings,
            reconciler,
            ..
        } = self;
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        let stop = CancellationToken::new();
        let reopen_targets: Vec<Arc<ConfiguredSink>> =
            sinks.iter().map(|(sink, _)| Arc::clone(sink)).collect();
        let hangups = tokio::spawn(handle_hangups(
            reopen_targets,
            state.clone(),
            reload_keys,
            stop.child_token(),
        ));
        let supervised = |worker: String, start| {
            tokio::spawn(supervise(
                worker,
                Arc::clone(&state.workers),
                Arc::clone(&state.metrics),
                stop.child_token(),
                start,
            ))
        };
        let mut workers = Vec::with_capacity(sinks.len() + 1);
        {
            let (spool, token) = (state.spool.clone(), stop.child_token());
            let retention = Duration::from_secs(settings.spool.retention_secs);
            let dedup_window = Duration::from_secs(settings.spool.dedup_window_secs);
            workers.push(supervised(
                "maintenance".to_owned(),
                Box::new(move || {
                    Box::pin(maintain(
                        spool.clone(),
                        retention,
                        dedup_window,
                        token.clone(),
                    )) as WorkerFuture
                }) as WorkerStart,
            ));
        }
        if settings.spool.backend == SpoolBackend::Postgres {
            // Other replicas' records wake this one's workers at once.
            let (spool, woken, token) = (state.spool.clone(), state.clone(), stop.child_token());
            workers.push(supervised(
                "listen".to_owned(),
                Box::new(move || {
                    let woken = woken.clone();
                    let on_stored: OnStored = Arc::new(move |event_type| match event_type {
                        Some(event_type) => woken.wake_sinks(event_type),
                        None => woken.wake_all_sinks(),
                    });
                    let (spool, token) = (spool.clone(), token.clone());
                    Box::pin(async move { spool.watch_stored(on_stored, token).await })
                        as WorkerFuture
                }),
            ));
        }
        if let Some(reconciler) = reconciler {
            let token = stop.child_token();
            let holder = reconcile::holder_name();
            workers.push(supervised(
                "reconcile".to_owned(),
                Box::new(move || {
                    Box::pin(reconcile::run_periodically(
                        Arc::clone(&reconciler),
                        holder.clone(),
                        token.clone(),
                    )) as WorkerFuture
                }),
            ));
        }
        for (sink, wake) in sinks {
            let (spool, metrics, token) = (
                state.spool.clone(),
                Arc::clone(&state.metrics),
                stop.child_token(),
            );
            workers.push(supervised(
                format!("delivery:{}", sink.name),
                Box::new(move || {
                    Box::pin(delivery::run(
                        spool.clone(),
                        Arc::clone(&sink),
                        Arc::clone(&wake),
                        Arc::clone(&metrics),
                        token.clone(),
                    )) as WorkerFuture
                }),
            ));
        }
        let admin_server = admin.map(|(listener, _)| {
            let backlog = Arc::new(admin::Backlog::default());
            let sink_infos: Vec<admin::SinkInfo> = settings
                .sinks
                .iter()
                .map(|sink| admin::SinkInfo {
                    name: sink.name.clone(),
                    kind: sink.kind.type_name(),
                    event_types: sink.event_types.clone(),
                })
                .collect();
            let sampler = tokio::spawn(admin::sample_backlog(
                state.spool.clone(),
                state.sinks(),
                Arc::clone(&backlog),
                stop.child_token(),
            ));
            let reconcile = &settings.reconcile;
            let admin_state = admin::AdminState::new(
                state.clone(),
                settings.admin.tokens.clone(),
                sink_infos,
                backlog,
            )
            .with_reconcile(admin::ReconcileInfo {
                enabled: reconcile.enabled,
                endpoint: reconcile.endpoint.clone(),
                interval_secs: reconcile.interval_secs,
                lag_secs: reconcile.lag_secs,
                lookback_secs: reconcile.lookback_secs,
                event_types: reconcile.event_types.clone(),
            });
            let server = tokio::spawn(http::serve(
                listener,
                admin::router(admin_state),
                ServeOptions {
                    max_connections: ADMIN_CONNECTIONS,
                    tls: None,
                    ..serve_options.clone()
                },
                stop.clone(),
                grace,
            ));
            (server, sampler)
        });
        let router = http::router(
            state.clone(),
            &settings.server.callback_path,
            admin_server.is_some(),
        );
        let server = tokio::spawn(http::serve(
            listener,
            router,
            serve_options,
            stop.clone(),
            grace,
        ));
        stops.next().await;
        // Still serving: only the load balancer's probe is told, so it takes
        // this replica out before the listener closes after the delay.
        state.start_draining();
        let delay = Duration::from_secs(settings.server.shutdown_delay_secs);
        if !delay.is_zero() {
            tracing::info!(
                delay_secs = delay.as_secs(),
                "shutting down: /readyz answers 503 while callbacks are still served, \
                 until the listener closes (a second signal closes it now)"
            );
            let second_stop = async {
                if stops.next().await.is_none() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = second_stop => {
                    tracing::info!("shutting down: second signal, the rest of the delay is skipped");
                }
            }
        }
        // One bound for the whole shutdown: draining requests and stopping
        // every worker share it, however many sinks there are.
        let deadline = tokio::time::Instant::now() + grace;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: finishing in-flight requests"
        );
        stop.cancel();
        if server.await.is_err() {
            tracing::error!("the server task failed");
        }
        if let Some((admin_server, sampler)) = admin_server {
            if admin_server.await.is_err() {
                tracing::error!("the admin server task failed");
            }
            let _ = sampler.await;
        }
        let _ = hangups.await;
        let all_workers = futures_util::future::join_all(workers.iter_mut());
        if tokio::time::timeout_at(deadline, all_workers)
            .await
            .is_err()
        {
            // A delivery cut short here is attempted again after the restart.
            tracing::warn!(
                "background workers did not stop within the grace period; abandoning their attempts"
            );
            workers.iter().for_each(tokio::task::JoinHandle::abort);
        }
        state.spool.close().await;
        tracing::info!("spool closed; stopped");
        Ok(())
    }
}

/// A background worker's run, as the supervisor starts it.
type WorkerFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
/// Starts a background worker afresh (after a panic, too).
type WorkerStart = Box<dyn FnMut() -> WorkerFuture + Send>;

/// Runs `step` (one bounded delete) until it removes less than a full batch,
/// so each transaction holds the writer only briefly; returns the total.
async fn in_batches<F, Fut>(what: &str, mut step: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, SpoolError>>,
{
    let mut total = 0;
    loop {
        match step().await {
            Ok(count) => {
                total += count;
                if count < PURGE_BATCH {
                    return total;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not {what}");
                return total;
            }
        }
    }
}

/// Removes what retention and the dedup window allow, now and then every
/// [`MAINTENANCE_INTERVAL`], until `stop`.
async fn maintain(
    spool: Spool,
    retention: Duration,
    dedup_window: Duration,
    stop: CancellationToken,
) {
    loop {
        let now = SystemTime::now();
        let before = |age: Duration| unix_ms(now.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH));
        let purged = in_batches("purge delivered records", || {
            spool.purge_delivered(before(retention), PURGE_BATCH)
        })
        .await;
        let forgotten = in_batches("prune the dedup index", || {
            spool.prune_seen(before(dedup_window), PURGE_BATCH)
        })
        .await;
        if purged > 0 || forgotten > 0 {
            tracing::info!(
                purged,
                forgotten,
                spool_bytes = spool.disk_bytes(),
                "spool maintenance"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            () = stop.cancelled() => break,
        }
    }
}

/// Applies a SIGHUP: reopens sink files (for logrotate) and reloads the
/// callback keys; a reload that fails keeps the keys in force.
fn apply_hangup(sinks: &[Arc<ConfiguredSink>], state: &AppState, reload_keys: &KeyReloader) {
    sinks.iter().for_each(|sink| sink.sink.reopen());
    match reload_keys() {
        Ok(authenticator) => {
            let keys = authenticator.key_count();
            state.replace_authenticator(authenticator);
            tracing::info!(
                signal = "SIGHUP",
                keys,
                "callback keys reloaded; sink files reopened"
            );
        }
        Err(err) => tracing::error!(
            signal = "SIGHUP",
            error = %err,
            "callback keys NOT reloaded, the previous keys stay in force; sink files reopened"
        ),
    }
}

/// Waits for SIGHUPs until `stop`.
async fn handle_hangups(
    sinks: Vec<Arc<ConfiguredSink>>,
    state: AppState,
    reload_keys: KeyReloader,
    stop: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGHUP");
                return;
            }
        };
        loop {
            tokio::select! {
                received = hangups.recv() => {
                    if received.is_none() {
                        break;
                    }
                    apply_hangup(&sinks, &state, &reload_keys);
                }
                () = stop.cancelled() => break,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (sinks, state, reload_keys);
        stop.cancelled().await;
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    shutdown_signals().next().await;
}

/// One item for each SIGTERM or SIGINT (Ctrl-C) the process receives, for
/// [`Application::run_until_stopped`]; never ends.
#[cfg(unix)]
pub fn shutdown_signals() -> impl Stream<Item = ()> + Send + Unpin + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    /// A stream of `kind`, or none (logged) when it cannot be listened for.
    fn each(kind: SignalKind, name: &'static str) -> impl Stream<Item = ()> + Send {
        let listener = signal(kind)
            .inspect_err(|err| tracing::error!(error = %err, "cannot listen for {name}"))
            .ok();
        stream::unfold(listener, move |listener: Option<Signal>| async move {
            let mut listener = listener?;
            listener.recv().await?;
            tracing::info!(signal = name, "signal received");
            Some(((), Some(listener)))
        })
        // A signal that cannot be listened for must not end the stream:
        // its end would read as a stop.
        .chain(stream::pending())
    }
    Box::pin(stream::select(
        each(SignalKind::terminate(), "SIGTERM"),
        each(SignalKind::interrupt(), "SIGINT"),
    ))
}

/// One item for each Ctrl-C the process receives; never ends.
#[cfg(not(unix))]
pub fn shutdown_signals() -> impl Stream<Item = ()> + Send + Unpin + 'static {
    Box::pin(
        stream::unfold((), |()| async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => {
                    tracing::info!(signal = "SIGINT", "signal received");
                    Some(((), ()))
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGINT");
                    None
                }
            }
        })
        .chain(stream::pending()),
    )
}
