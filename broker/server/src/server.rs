//! Starting and stopping the whole server: open the streams, bind the
//! listeners, serve until shutdown, then drain and fsync.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tidewire_auth::Auth;
use tidewire_aws::AwsApi;
use tidewire_bridge::{BridgeError, BridgeMetrics, Bridges};
use tidewire_core::{Broker, Catalog, CatalogError, PublishMetrics, StorageError, Streams};
use tidewire_dashboard::Dashboard;
use tidewire_export::{ExportError, ExportMetrics, Exports};
use tidewire_mqtt::{MqttError, MqttServer};
use tidewire_queues::{QueueError, QueueMetrics, Queues};
use tidewire_sql::{ContinuousQueries, SqlEngine, SqlError, SqlMetrics};
use tidewire_storage::{OnFatal, StorageMetrics};
use tidewire_targets::Targets;
use tidewire_tls::Tls;
use tidewire_topics::{Naming, TopicError, TopicMetrics, Topics, TopicsSetup};
use tidewire_websocket::{Gateway, Services, WebSocketSettings, WsMetrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HttpLimits};
use crate::http::{self, AppState, HttpMetrics};
use crate::reload::Reloader;

/// How long in-flight HTTP requests get to finish once shutdown starts
/// (MQTT connections get as long, concurrently). Together with the final
/// fsync this keeps shutdown under 5 s.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest AWS request body (SQS's own limit for a batch is 1 MiB).
const AWS_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Why the server could not start, or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The queues could not be opened (a bad definition, or their files).
    #[error("opening queues: {0}")]
    Queues(#[from] QueueError),
    /// An export could not start (its stream, destination or projection).
    #[error("starting exports: {0}")]
    Exports(#[from] ExportError),
    /// The fan-out topics could not be opened (a bad definition, a target
    /// that does not exist, or their files).
    #[error("opening topics: {0}")]
    Topics(#[from] TopicError),
    /// The data directory or a stream could not be opened (external).
    #[error("opening streams: {0}")]
    Storage(#[from] StorageError),
    /// The catalog of streams created at run time could not be loaded
    /// (external: a damaged file names itself).
    #[error("opening the catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// A listener could not be bound (external, or a port in use).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The MQTT server could not start or failed.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// The SQL engine or a configured continuous query could not start.
    #[error("starting SQL: {0}")]
    Sql(#[from] SqlError),
    /// A bridge could not start.
    #[error("starting bridges: {0}")]
    Bridge(#[from] BridgeError),
    /// Serving failed.
    #[error("serving {what}: {source}")]
    Serve {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Storage failed for good while serving (an fsync error).
    #[error("stopped after a fatal storage error: {0}")]
    Fatal(String),
    /// A bug: a task the server depends on ended unexpectedly.
    #[error("internal error (a bug): {0}")]
    Internal(String),
}

/// `GET /?Action=...`: the links SNS hands out (`SubscribeURL`,
/// `UnsubscribeURL`) go to the AWS endpoint; any other `GET /` is the
/// dashboard's.
async fn aws_links(
    axum::extract::State(aws): axum::extract::State<AwsApi>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_link = request.method() == axum::http::Method::GET
        && request.uri().path() == "/"
        && request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("Action=")));
    if !is_link {
        return next.run(request).await;
    }
    let (parts, _) = request.into_parts();
    let peer = parts
        .extensions
        .get::<tidewire_auth::Peer>()
        .copied()
        .map(axum::Extension);
    tidewire_aws::handle(
        axum::extract::State(aws),
        peer,
        parts.method,
        parts.uri,
        parts.headers,
        axum::body::Bytes::new(),
    )
    .await
}

/// The broker's base URL for links it hands out (SNS `UnsubscribeURL`):
/// the HTTP listener, with loopback for an unspecified address.
fn endpoint(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// A started server: streams open, listeners bound, not yet serving.
#[derive(Debug)]
pub struct Server {
    broker: Broker,
    catalog: Catalog,
    queues: Queues,
    topics: Topics,
    exports: Exports,
    auth: Auth,
    reloader: Reloader,
    registry: Arc<Registry>,
    mqtt: MqttServer,
    bridges: Bridges,
    websocket: WebSocketSettings,
    websocket_metrics: WsMetrics,
    dashboards: Vec<Dashboard>,
    sql: SqlEngine,
    queries: ContinuousQueries,
    background: CancellationToken,
    http: TcpListener,
    http_addr: SocketAddr,
    http_limits: HttpLimits,
    http_metrics: HttpMetrics,
    http_tls: Option<Tls>,
    aws: AwsApi,
    fatal: Arc<FatalError>,
}

/// The first fatal storage error, which stops the server.
#[derive(Debug, Default)]
struct FatalError {
    reason: Mutex<Option<String>>,
    raised: CancellationToken,
}

impl Server {
    /// Opens (recovering) every stream and binds the listeners.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        let mut registry = Registry::default();
        let storage_metrics = StorageMetrics::register(&mut registry);
        let publish_metrics = PublishMetrics::register(&mut registry);
        config.auth.metrics().register(&mut registry);
        if let Some(tls) = &config.tls {
            tls.metrics().register(&mut registry);
        }
        let fatal = Arc::new(FatalError::default());
        let on_fatal: OnFatal = {
            let fatal = Arc::clone(&fatal);
            Arc::new(move |e: &StorageError| {
                let mut reason = fatal.reason.lock().unwrap_or_else(|p| p.into_inner());
                reason.get_or_insert_with(|| e.to_string());
                fatal.raised.cancel();
            })
        };
        let data_dir = config.data_dir.clone();
        let specs = config.streams.clone();
        let streams = {
            let (storage_metrics, on_fatal) = (storage_metrics.clone(), on_fatal.clone());
            tokio::task::spawn_blocking(move || {
                Streams::open(&data_dir, specs, &storage_metrics, on_fatal)
            })
            .await
            .map_err(|e| ServerError::Internal(format!("stream opening task: {e}")))??
        };
        let broker = Broker::new(streams, config.limits, publish_metrics);
        let catalog = {
            let (broker, storage_metrics, on_fatal) =
                (broker.clone(), storage_metrics.clone(), on_fatal.clone());
            let limits = config.catalog;
            tokio::task::spawn_blocking(move || {
                Catalog::open(broker, storage_metrics, on_fatal, limits)
            })
            .await
            .map_err(|e| ServerError::Internal(format!("catalog opening task: {e}")))??
        };
        let queues = {
            let (catalog, storage_metrics, on_fatal) =
                (catalog.clone(), storage_metrics.clone(), on_fatal.clone());
            let (configs, max_queues) = (config.queues.clone(), config.max_queues);
            let metrics = QueueMetrics::register(&mut registry);
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let _entered = runtime.enter();
                Queues::open(
                    catalog,
                    &configs,
                    storage_metrics,
                    on_fatal,
                    metrics,
                    max_queues,
                )
            })
            .await
            .map_err(|e| ServerError::Internal(format!("queue opening task: {e}")))??
        };
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.http_listen,
                source,
            })?;
        let http_addr = http.local_addr().map_err(|source| ServerError::Bind {
            addr: config.http_listen,
            source,
        })?;
        let targets = Targets::new(broker.clone(), queues.clone(), config.smtp.clone())
            .map_err(TopicError::from)?;
        targets.set_nats_links(config.nats_links.clone());
        let topics = Topics::open(
            TopicsSetup {
                catalog: catalog.clone(),
                targets,
                storage: storage_metrics.clone(),
                on_fatal: on_fatal.clone(),
                metrics: TopicMetrics::register(&mut registry),
                naming: Naming {
                    account: config.aws.account_id.clone(),
                    region: config.aws.region.clone(),
                    endpoint: endpoint(http_addr, config.http_tls),
                },
                limits: config.topic_limits,
            },
            &config.topics,
        )
        .await?;
        broker.set_routes(vec![queues.publish_routes(), topics.publish_routes()]);
        let mqtt = MqttServer::start(
            config.mqtt.clone(),
            broker.clone(),
            &config.data_dir,
            &mut registry,
            &storage_metrics,
            on_fatal,
        )
        .await?;
        let websocket_metrics = WsMetrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        let background = CancellationToken::new();
        let sql = SqlEngine::new(
            broker.clone(),
            config.sql,
            SqlMetrics::register(&mut registry),
        )?;
        tokio::spawn(sql.clone().maintain_column_files(background.clone()));
        let exports = Exports::open(
            catalog.clone(),
            &config.exports,
            ExportMetrics::register(&mut registry),
            config.max_exports,
        )
        .await?;
        sql.set_histories(Arc::new(exports.clone()));
        let queries = ContinuousQueries::new(sql.clone(), background.clone());
        for query in &config.queries {
            queries.start(query.clone()).await?;
        }
        let bridges = Bridges::start(
            &config.bridges,
            &broker,
            &config.data_dir,
            &BridgeMetrics::register(&mut registry),
            &config.auth,
            &background,
        )
        .await?;
        Ok(Server {
            broker,
            catalog,
            queues: queues.clone(),
            topics: topics.clone(),
            exports,
            reloader: Reloader::new(&config),
            auth: config.auth.clone(),
            registry: Arc::new(registry),
            mqtt,
            bridges,
            websocket: config.websocket,
            websocket_metrics,
            dashboards: config.dashboards,
            sql,
            queries,
            background,
            http,
            http_addr,
            http_limits: config.http,
            http_metrics,
            http_tls: config.tls.clone().filter(|_| config.http_tls),
            aws: AwsApi::new(config.aws.clone(), config.auth.clone(), queues, topics),
            fatal,
        })
    }

    /// The bound MQTT address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt.local_addr()
    }

    /// The bound MQTT-over-TLS address, if that listener is on.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.mqtt.tls_addr()
    }

    /// The bound HTTP address (with the real port when 0 was asked for).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Reloads the config file (on SIGHUP, say).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The broker core, for embedding and tests.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Serves until `shutdown` is cancelled or storage fails fatally. Then
    /// stops accepting, lets in-flight requests finish (their acks included),
    /// and syncs and closes every stream.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let stop = CancellationToken::new();
        let state = AppState {
            broker: self.broker.clone(),
            catalog: self.catalog.clone(),
            queues: self.queues.clone(),
            topics: self.topics.clone(),
            exports: self.exports.clone(),
            reloader: self.reloader.clone(),
            registry: Arc::clone(&self.registry),
        };
        let gateway = Gateway::new(
            Services {
                mqtt: self.mqtt.context(),
                sql: self.sql.clone(),
                queries: self.queries.clone(),
                queues: self.queues.clone(),
                topics: self.topics.clone(),
            },
            self.websocket.clone(),
            self.websocket_metrics.clone(),
            stop.clone(),
        );
        let app = http::router(state)
            .merge(gateway.router())
            .merge(tidewire_dashboard::router(self.dashboards))
            .merge(tidewire_bridge::api::router(self.bridges.states()))
            .merge(tidewire_sql::http::router(
                self.sql.clone(),
                self.queries.clone(),
            ))
            .route(
                "/",
                axum::routing::post(tidewire_aws::handle)
                    .with_state(self.aws.clone())
                    .layer(axum::extract::DefaultBodyLimit::max(AWS_MAX_BODY_BYTES)),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.aws.clone(),
                aws_links,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.auth.clone(),
                http::auth::authenticate,
            ))
            .layer(axum::middleware::from_fn(http::json_errors));
        let mut serving = tokio::spawn(http::serve(
            self.http,
            app,
            self.http_limits,
            self.http_metrics.clone(),
            self.http_tls,
            stop.clone(),
        ));

        let mqtt = tokio::spawn(self.mqtt.run(stop.clone()));

        let served_early = tokio::select! {
            () = shutdown.cancelled() => None,
            () = self.fatal.raised.cancelled() => None,
            result = &mut serving => Some(result),
        };
        stop.cancel();
        // Running queries end now (their requests answer 503), so no
        // runaway query holds up the drain.
        self.sql.shutdown();
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        if !gateway.drain(DRAIN_TIMEOUT).await {
            tracing::warn!("/ws sockets did not close in time");
        }
        let mqtt_result = mqtt
            .await
            .map_err(|e| ServerError::Internal(format!("MQTT task: {e}")))?;
        let served = match served_early {
            Some(result) => Some(result),
            None => tokio::time::timeout_at(deadline, &mut serving).await.ok(),
        };
        if served.is_none() {
            tracing::warn!("in-flight HTTP requests did not finish in time; closing anyway");
            serving.abort();
        }
        self.bridges.stop().await;
        self.background.cancel();
        self.topics.close().await;
        self.exports.close().await;
        self.broker.streams().close().await;
        self.queues.close().await;
        tracing::info!("all streams, topics and queues synced and closed");

        if let Some(reason) = self
            .fatal
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(ServerError::Fatal(reason));
        }
        mqtt_result?;
        match served {
            Some(Ok(Err(source))) => Err(ServerError::Serve {
                what: "HTTP",
                source,
            }),
            Some(Err(join)) => Err(ServerError::Internal(format!("HTTP task: {join}"))),
            _ => Ok(()),
        }
    }
}
