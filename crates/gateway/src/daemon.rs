//! The daemon's composition root: builds the store, the meter link, the sync client, the policy
//! loop and the technician socket, hands each the narrow handle it needs, and runs them until
//! shutdown. Nothing it spawns imports it: the link sees a [`LinkBackend`], the sync client a
//! [`SyncBackend`], the policy pass a [`RelayLink`].
use crate::config::GatewayConfig;
use crate::gateway::{Gateway, GatewayError, RelayLink};
use crate::health::Health;
use crate::link::config::{AccessMode, LinkSection, RadioKind, RadioSection};
use crate::link::{
    CommandSender, Link, LinkBackend, LinkClock, LinkError, LinkRequest, ProvisionedMeters,
    RelayRequest, SharedStats,
};
use crate::local;
use crate::store::{DlmsIc, Fcnt, LinkSession, MeterReading, Store, StoreError};
use crate::sync::client::{self as sync_client, SyncBackend, SyncConfig};
use crate::sync::https::{HttpsTransport, SetupError};
use crate::technician;
use crate::wakers::Wakers;
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::civil;
use gramgrid_core::policy::{RelayAction, RelayState};
use gramgrid_net::wallclock::WallClock;
use gramgrid_proto::manifest::{MeterManifest, MeterRole};
use gramgrid_proto::payload::{DisplayUpdate, MeterEvent};
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The gateway could not open: data directory, tariff book in the config, or the store.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The sync transport could not be set up from the configured enrolment bundle.
    #[error(transparent)]
    Sync(#[from] SetupError),
    /// Another daemon already runs on this data directory (or its lock file cannot be made).
    #[error("{0}")]
    Locked(String),
    /// The config's gateway id is not the one in the enrolment certificate.
    #[error("{0}")]
    Identity(String),
    /// The technician app's certificate could not be found or made.
    #[error("technician app certificate: {0}; set [technician] cert and key, or enabled = false")]
    TechnicianCertificate(#[from] gramgrid_net::pki::PkiError),
}

/// Takes the data directory's lock for the daemon's lifetime (the lock goes with the returned file,
/// also when the process dies), so that a second daemon on the same directory refuses to start
/// instead of sharing the database and removing the first's technician socket.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, DaemonError> {
    let path = dir.join("gateway.lock");
    let cannot = |e: std::io::Error| {
        DaemonError::Locked(format!(
            "cannot create the lock file {}: {e}; check gateway.data_dir and its permissions",
            path.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(cannot)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::Locked(format!(
            "another gramgrid gateway is already running on {} (it holds {}); stop it first, or give this one its own gateway.data_dir",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(cannot(e)),
    }
}

/// The sync client's transport from the enrolment bundle, if one is configured; its certificate
/// must name this gateway's configured id.
fn sync_transport(config: &GatewayConfig) -> Result<Option<HttpsTransport>, DaemonError> {
    Ok(match &config.sync.bundle {
        Some(bundle) => {
            let transport = HttpsTransport::from_bundle(bundle, config.sync.request_timeout)?;
            if transport.gateway_id() != config.gateway.id {
                return Err(DaemonError::Identity(format!(
                    "gateway.id is '{}' but the enrolment bundle {} is for gateway '{}': the ids this gateway gives its events must be the certificate's; set gateway.id = \"{}\"",
                    config.gateway.id,
                    bundle.display(),
                    transport.gateway_id(),
                    transport.gateway_id()
                )));
            }
            Some(transport)
        }
        None => {
            tracing::warn!("no [sync] bundle configured: this gateway runs offline only");
            None
        }
    })
}

/// What the technician app needs to start, if `[technician]` enables it: its certificate (the
/// configured one, the bundle's, or a self-signed one made now) and the config to show.
pub fn technician_launch(config: &GatewayConfig) -> Result<Option<TechnicianLaunch>, DaemonError> {
    if !config.technician.enabled {
        return Ok(None);
    }
    let bundle = match &config.sync.bundle {
        Some(path) => Some(gramgrid_net::pki::GatewayBundle::load(path)?),
        None => None,
    };
    let certificate = technician::certificate(
        &config.technician,
        bundle.as_ref(),
        &config.gateway.data_dir,
        &config.gateway.id,
    )?;
    Ok(Some(TechnicianLaunch {
        config: config.technician.clone(),
        certificate,
        gateway_id: config.gateway.id.clone(),
        config_toml: toml::to_string(config).unwrap_or_default(),
    }))
}

/// The technician app's settings, ready to serve.
pub struct TechnicianLaunch {
    /// `[technician]`.
    pub config: technician::TechnicianConfig,
    /// Its certificate and key files.
    pub certificate: (std::path::PathBuf, std::path::PathBuf),
    /// The gateway's id.
    pub gateway_id: String,
    /// The config as TOML, for the diagnostics bundle.
    pub config_toml: String,
}

/// Runs the gateway daemon until `shutdown` completes: the policy loop on its schedule, the sync
/// client (when an enrolment bundle is configured) and the local technician socket, each a task that
/// stops when told; the daemon returns once all have stopped.
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let _lock = lock_data_dir(&config.gateway.data_dir)?;
    let transport = sync_transport(&config)?;
    let link_stats = SharedStats::default();
    let (radio, link) = (config.radio.clone(), config.link.clone());
    let radio_runs = radio.kind != RadioKind::None;
    let services = Services {
        policy_schedule: config.policy_schedule(),
        socket: local::socket_path(&config.gateway.data_dir),
        sync: transport.map(|t| (t, config.sync.clone())),
        modem: Some(config.modem.clone()).filter(|m| m.enabled),
        technician: technician_launch(&config)?,
        health: Health::new(
            Utc::now(),
            radio_runs.then(|| link_stats.clone()),
            config.gateway.data_dir.clone(),
        ),
        clock: WallClock::System,
    };
    let watchdog_limits = crate::watchdog::limits_for(&services.policy_schedule, Utc::now());
    let gateway_id = config.gateway.id.clone();
    let gateway = Arc::new(Mutex::new(Gateway::open(config)?));
    tracing::info!(socket = %services.socket.display(), "gateway started");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let watched_link = radio_runs.then(|| link_stats.clone());
    if radio_runs {
        let provisioned = ProvisionedMeters::default();
        let (sender, requests) = crate::link::command_channel(provisioned.clone());
        gateway
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_relay_link(Box::new(sender));
        tasks.spawn(run_link(
            gateway.clone(),
            gateway_id,
            radio,
            link,
            (requests, provisioned, link_stats),
            stopping.clone(),
        ));
    }
    let heartbeats = services.spawn(&gateway, &mut tasks, &stopping);
    tasks.spawn(crate::watchdog::run(
        gateway.clone(),
        (heartbeats, watched_link),
        watchdog_limits,
        stopping.clone(),
    ));
    crate::watchdog::ready();
    shutdown.await;
    crate::watchdog::stopping();
    let _ = stop.send(true);
    while let Some(finished) = tasks.join_next().await {
        if let Err(error) = finished {
            tracing::error!(%error, "a gateway task ended abnormally");
        }
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// The daemon's meter link: provisions keys from the manifest (if configured), opens the radio the
/// config names and runs the access mode until `stop`. Errors are logged, never fatal to the daemon.
async fn run_link(
    gateway: Arc<Mutex<Gateway>>,
    gateway_id: String,
    radio: RadioSection,
    link: LinkSection,
    commands: (
        mpsc::UnboundedReceiver<LinkRequest>,
        ProvisionedMeters,
        SharedStats,
    ),
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if let Err(error) = serve_gateway(gateway, &gateway_id, radio, link, commands, stop).await {
        tracing::error!(%error, "the meter link stopped: no readings are heard and relay commands wait in the store until it is fixed and the gateway restarted");
    }
}

// Without a radio backend compiled in, only `kind = "none"` can run.
#[cfg_attr(
    not(any(feature = "emulator", feature = "hardware")),
    allow(unused_variables, dead_code)
)]
async fn serve_gateway(
    gateway: Arc<Mutex<Gateway>>,
    gateway_id: &str,
    radio: RadioSection,
    link: LinkSection,
    (requests, provisioned, stats): (
        mpsc::UnboundedReceiver<LinkRequest>,
        ProvisionedMeters,
        SharedStats,
    ),
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), LinkError> {
    if let Some(path) = &link.manifest {
        let provisioned = {
            let mut g = gateway.lock().unwrap_or_else(|p| p.into_inner());
            provision_from_manifest(g.store(), path)?
        };
        tracing::info!(provisioned, manifest = %path.display(), "meter keys loaded from the manifest");
    }
    let l = Link::new(
        GatewayBackend::new(gateway),
        link.timing(),
        radio.radio_config(),
        LinkClock::system(),
    )
    .with_provisioned(provisioned)
    .with_stats(stats)
    .with_gateway_id(gateway_id);
    match radio.kind {
        RadioKind::None => Ok(()),
        #[cfg(feature = "emulator")]
        RadioKind::Emulator => {
            let spec = gramgrid_air::air::NodeSpec {
                antenna_gain_dbi: radio.antenna_gain_dbi,
                ..gramgrid_air::air::NodeSpec::new("gateway", radio.x_m, radio.y_m)
            };
            let (r, _membership) =
                gramgrid_air::sim::radio_on_bus(radio.bus, spec, Default::default()).await?;
            drive(l, r, link.mode, requests, stop).await
        }
        #[cfg(feature = "hardware")]
        RadioKind::Hardware => {
            let r = gramgrid_radio::hardware::HardwareRadio::open(&radio.hardware).await?;
            drive(l, r, link.mode, requests, stop).await
        }
        #[cfg(not(feature = "hardware"))]
        RadioKind::Hardware => Err(LinkError::NoHardwareSupport),
        #[cfg(not(feature = "emulator"))]
        RadioKind::Emulator => Err(LinkError::NoEmulatorSupport),
    }
}

// Without a radio backend compiled in, only `kind = "none"` can run.
#[cfg_attr(
    not(any(feature = "emulator", feature = "hardware")),
    allow(unused_variables, dead_code)
)]
async fn drive<R: gramgrid_radio::Radio>(
    l: Link<GatewayBackend>,
    r: R,
    mode: AccessMode,
    requests: mpsc::UnboundedReceiver<LinkRequest>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), LinkError> {
    match mode {
        AccessMode::Scheduled => l.run_scheduled(r, requests, stop).await,
        AccessMode::Aloha => l.run_aloha(r, requests, stop).await,
    }
}

/// The daemon's backend: the gateway's store, charged as readings arrive.
pub struct GatewayBackend {
    gateway: Arc<Mutex<Gateway>>,
}

impl GatewayBackend {
    /// A backend over the gateway the daemon shares with the policy loop, the sync client and the
    /// technician socket (each call takes its lock briefly).
    pub fn new(gateway: Arc<Mutex<Gateway>>) -> Self {
        Self { gateway }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Gateway) -> Result<T, StoreError>,
    ) -> Result<T, LinkError> {
        // A panic elsewhere while holding the lock leaves the store transactionally consistent.
        let mut gateway = self.gateway.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut gateway)?)
    }
}

impl LinkBackend for GatewayBackend {
    fn sessions(&mut self) -> Result<Vec<LinkSession>, LinkError> {
        self.with(|g| g.store().link_sessions())
    }
    fn commit_fcnt(&mut self, meter: i64, which: Fcnt, fcnt: u32) -> Result<(), LinkError> {
        self.with(|g| g.store().commit_fcnt(meter, which, fcnt))
    }
    fn commit_dlms_ic(&mut self, meter: i64, which: DlmsIc, ic: u32) -> Result<(), LinkError> {
        self.with(|g| g.store().commit_dlms_ic(meter, which, ic))
    }
    fn readings(&mut self, batch: &[MeterReading]) -> Result<(), LinkError> {
        self.with(|g| g.ingest_readings(batch).map(|_| ()))
    }
    fn events(
        &mut self,
        meter: i64,
        events: &[MeterEvent],
        at: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        self.with(|g| g.on_meter_events(meter, events, at).map(drop))
    }
    fn relay_state(
        &mut self,
        meter: i64,
        state: RelayState,
        at: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        self.with(|g| g.on_relay_report(meter, state, at))
    }
}

/// Loads a meter manifest's keys (and a DLMS meter's association keys) into the store for the
/// meters it knows (by serial), and installs
/// its transformer meters (`role = "dt"`: they belong to no account, so they need nothing from
/// central first). Returns how many were provisioned; entries for household meters not installed
/// here are skipped with a warning (the central server may not have synced them yet).
pub fn provision_from_manifest(
    store: &mut Store,
    path: &std::path::Path,
) -> Result<usize, LinkError> {
    let fail = |detail: String| LinkError::Manifest {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let manifest = MeterManifest::parse(&text).map_err(|e| fail(e.to_string()))?;
    let mut provisioned = 0;
    for entry in &manifest.meters {
        if entry.role == MeterRole::Transformer {
            store.install_transformer_meter(&entry.serial, Utc::now(), &entry.keys)?;
        }
        match store.meter_id(&entry.serial)? {
            Some(meter) => {
                store.set_meter_keys(meter, &entry.keys)?;
                store.set_meter_dlms(meter, entry.dlms.as_ref())?;
                provisioned += 1;
            }
            None => tracing::warn!(
                serial = %entry.serial,
                "meter manifest names a meter not installed on this gateway; skipped"
            ),
        }
    }
    Ok(provisioned)
}

impl RelayLink for CommandSender {
    fn send(
        &mut self,
        meter: i64,
        command_id: &str,
        action: RelayAction,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<(), String> {
        self.request(LinkRequest::Send(RelayRequest {
            meter,
            command_id: command_id.to_string(),
            action,
            not_after,
        }))
    }

    fn withdraw(&mut self, meter: i64, command_id: &str) -> Result<(), String> {
        self.request(LinkRequest::Withdraw {
            meter,
            command_id: command_id.to_string(),
        })
    }

    fn can_reach(&self, meter: i64) -> bool {
        CommandSender::can_reach(self, meter)
    }

    fn meters_changed(&mut self) -> Result<(), String> {
        self.request(LinkRequest::Reload)
    }

    fn clock_trusted(&mut self, trusted: bool) -> Result<(), String> {
        self.request(LinkRequest::ClockTrusted(trusted))
    }

    fn show(&mut self, meter: i64, update: DisplayUpdate) -> Result<(), String> {
        self.request(LinkRequest::Display { meter, update })
    }

    fn silent_since(&self) -> std::collections::HashMap<i64, DateTime<Utc>> {
        CommandSender::silent_since(self)
    }
}

impl SyncBackend for Gateway {
    fn store(&mut self) -> &mut Store {
        Gateway::store(self)
    }
    fn downlink_applied(&mut self) -> Result<(), StoreError> {
        self.refresh_published()?;
        // Any record may have added, re-keyed, moved or removed a meter: the link reloads its
        // sessions (one small query) rather than this guessing which.
        self.meters_changed();
        Ok(())
    }
}

/// Completes when the daemon is told to stop.
async fn stopped(mut stopping: tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// What the daemon runs around an open gateway, besides the meter link.
pub struct Services {
    /// When the policy loop runs (Asia/Kolkata).
    pub policy_schedule: cron::Schedule,
    /// The local technician socket.
    pub socket: std::path::PathBuf,
    /// The sync client's transport and settings; `None` runs offline.
    pub sync: Option<(HttpsTransport, SyncConfig)>,
    /// `[modem]` when enabled: urgent messages by SMS while the backhaul is down.
    pub modem: Option<crate::modem::ModemConfig>,
    /// The technician web app, when enabled.
    pub technician: Option<TechnicianLaunch>,
    /// The gateway's own health, for the technician app and central.
    pub health: Health,
    /// Where the policy loop, the socket and the sync client read "now".
    pub clock: WallClock,
}

impl Services {
    /// Spawns the policy loop, the local technician socket and the sync client on `tasks`; each
    /// stops when `stopping` turns true. Returns the policy loop's heartbeats (for the watchdog).
    pub fn spawn(
        self,
        gateway: &Arc<Mutex<Gateway>>,
        tasks: &mut tokio::task::JoinSet<()>,
        stopping: &tokio::sync::watch::Receiver<bool>,
    ) -> crate::watchdog::Heartbeats {
        let wakers = Arc::new(Wakers::default());
        let policy_health = technician::PolicyHealth::default();
        let heartbeats = crate::watchdog::Heartbeats::default();
        tasks.spawn(policy_loop(
            gateway.clone(),
            (
                self.policy_schedule,
                policy_health.clone(),
                heartbeats.clone(),
                wakers.clone(),
            ),
            self.clock.clone(),
            stopped(stopping.clone()),
        ));
        if let Some(launch) = self.technician {
            let app = technician::TechnicianApp {
                gateway: gateway.clone(),
                gateway_id: launch.gateway_id,
                clock: self.clock.clone(),
                wakers: wakers.clone(),
                health: self.health.clone(),
                policy_health,
                config: launch.config,
                config_toml: launch.config_toml,
            };
            tasks.spawn(serve_technician(
                app,
                launch.certificate,
                stopped(stopping.clone()),
            ));
        }
        let local_socket = local::serve(
            self.socket,
            gateway.clone(),
            self.clock.clone(),
            wakers.clone(),
            stopped(stopping.clone()),
        );
        tasks.spawn(async move {
            if let Err(error) = local_socket.await {
                tracing::error!(%error, "the local technician socket failed; `gramgrid gateway redeem` will not work");
            }
        });
        if let Some(modem) = self.modem {
            tasks.spawn(modem_loop(
                gateway.clone(),
                modem,
                self.clock.clone(),
                stopped(stopping.clone()),
            ));
        }
        if let Some((transport, config)) = self.sync {
            tasks.spawn(crate::sync::push::run(
                gateway.clone(),
                transport.clone(),
                config.clone(),
                wakers.clone(),
                stopped(stopping.clone()),
            ));
            tasks.spawn(sync_client::run(
                gateway.clone(),
                transport,
                config,
                (self.clock, Some(self.health)),
                wakers,
                stopped(stopping.clone()),
            ));
        }
        heartbeats
    }
}

/// How often the modem loop looks for messages to send while the backhaul is down.
const MODEM_ROUND: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects to ModemManager (retrying while it is not there: the modem may come up after the
/// daemon), then sends urgent messages through it while the backhaul is down.
async fn modem_loop(
    gateway: Arc<Mutex<Gateway>>,
    config: crate::modem::ModemConfig,
    clock: WallClock,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let bus = config.bus_address();
    let modem = loop {
        match crate::modem::ModemManager::connect(&bus).await {
            Ok(modem) => break modem,
            Err(error) => {
                tracing::warn!(%error, "no modem for SMS yet; trying again in a minute");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                    _ = &mut shutdown => return,
                }
            }
        }
    };
    tracing::info!(%bus, "modem ready: urgent messages go by SMS while the backhaul is down");
    crate::outage_sms::run(
        gateway,
        Arc::new(modem),
        config.send_after_backhaul_down,
        MODEM_ROUND,
        clock,
        shutdown,
    )
    .await;
}

/// Binds the technician app's address and serves it until `shutdown`; a failure is logged and
/// leaves the rest of the daemon running.
async fn serve_technician(
    app: technician::TechnicianApp,
    certificate: (std::path::PathBuf, std::path::PathBuf),
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let listen = app.config.listen;
    let served = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => {
            tracing::info!(url = %format!("https://{listen}/"), "technician app up");
            technician::serve(app, listener, certificate, shutdown).await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = served {
        tracing::error!(%error, %listen, "the technician app is not served: check [technician] listen and the certificate; the gateway goes on without it");
    }
}

/// Runs a tick at start, then on the schedule (Asia/Kolkata), until `shutdown` completes; each
/// pass's outcome is left in `health` for the technician's status page.
async fn policy_loop(
    gateway: Arc<Mutex<Gateway>>,
    (schedule, health, heartbeats, wakers): (
        cron::Schedule,
        technician::PolicyHealth,
        crate::watchdog::Heartbeats,
        Arc<Wakers>,
    ),
    clock: WallClock,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let now = clock.now();
        let outcome = match gateway.lock() {
            Ok(mut gateway) => gateway.tick(now),
            Err(_) => {
                tracing::error!("gateway state poisoned by a panic; stopping the policy loop");
                return;
            }
        };
        let error = match outcome {
            Ok(report) => {
                tracing::info!(?report, "policy pass");
                None
            }
            // A failed pass (e.g. a full disk) is logged and retried at the next tick, never fatal.
            Err(error) => {
                tracing::error!(%error, "policy pass failed; retrying at the next scheduled time");
                Some(error.to_string())
            }
        };
        *health.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(technician::LastPass { at: now, error });
        heartbeats.policy_pass();
        let next = schedule
            .after(&civil::local(now))
            .next()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now + Duration::minutes(1));
        let wait = (next - clock.now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // Money arrived: reconnect now rather than at the next scheduled pass.
            _ = wakers.policy.notified() => {}
            _ = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_on_the_same_data_directory_is_refused_until_the_first_stops() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data_dir(dir.path()).unwrap();
        let refused = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("already running"), "{refused}");
        drop(first);
        assert!(lock_data_dir(dir.path()).is_ok());
    }
}
