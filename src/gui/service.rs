//! The window's link to the node service: a background thread with its own tokio runtime that
//! runs the service (and an embedded hub) inside this process through a [`Host`], or watches
//! a `gatehouse node run` that already runs here: of its own data dir, or, when that has no
//! node, the system service's (`paths::service_home`; for root and the `gatehouse` group).
//! The window sends [`Request`]s and drains [`Event`]s; every event asks egui to repaint, so
//! the window never polls or blocks.
//!
//! Attached to a service of another user (the system service), the window can't write that
//! data dir (its files are the service user's alone, and root's writes would leave files the
//! service can't read): it watches, stops and tests through the control socket, reads the
//! settings and the Jobs tab's list through it (the service asks the hub with its own node
//! token), and answers every Settings change with the command to run instead. The Jobs tab of
//! any watched service, the same user's `node run` too, comes through the socket.

use eframe::egui;

use super::ops::{self, Op};
use crate::host::express::ExpressOptions;
use crate::host::hub_access::{Access, Reach};
use crate::host::{Host, HostError, Running};
use crate::node::add_node::AddNode;
use crate::node::control::{
    ConnectionTest, ControlClient, ControlError, ControlEvent, ServiceDir, find_service,
};
use crate::node::logs::{LogFeed, LogLine};
use crate::node::metrics::SystemMetrics;
use crate::node::store::{NodeSettings, Store};
use crate::node::{self, NodeCommand, NodeStatus};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the window asks the service for.
pub enum Request {
    /// One-click setup: a hub (embedded if none is configured), a gateway, this node.
    Express,
    /// Manual setup with an auth key, a node name and optionally a certificate.
    Register(Box<ManualSetup>),
    /// Start or stop the node service.
    Start,
    Stop,
    /// Time the hub and every peer.
    TestConnections,
    /// A settings, credentials, backup or log operation.
    Op(Op),
    /// The gateway's recent jobs, from the hub (the Jobs tab).
    Jobs,
    /// A fresh one-time key for adding a node (Add a node).
    AddNodeKey,
    /// Open the embedded hub to other machines, or back to this one.
    HubAccess(Access),
}

/// What the person entered in the manual setup wizard.
pub struct ManualSetup {
    pub key: String,
    pub name: String,
    /// `None`: no encryption.
    pub certificate: Option<CertificateChoice>,
    pub port: u16,
    /// A PEM file of the CA that signed the hub's HTTPS certificate (a private CA); `None`:
    /// the system's roots.
    pub hub_ca: Option<PathBuf>,
}

/// A certificate file and its password (PFX); the password stays in memory only.
#[derive(Clone, Default)]
pub struct CertificateChoice {
    pub path: PathBuf,
    pub password: Option<String>,
    /// A PEM file of the private root CA that issued it, if any.
    pub roots: Option<PathBuf>,
}

/// The wizard page an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupPage {
    Welcome,
    Key,
    Name,
    Encryption,
}

/// Where the node service runs, as the Home tab says it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServiceState {
    /// Not registered yet (the wizard shows).
    Unregistered,
    #[default]
    Starting,
    /// Running inside this window's process.
    Running,
    /// A `gatehouse node run` process runs it; the window watches.
    Attached {
        pid: u32,
        /// Its data dir.
        data_dir: PathBuf,
        /// It is the system service (`gatehouse-node`, in `paths::service_home`).
        system: bool,
    },
    Stopping,
    /// Stopped; with the reason when it stopped on its own or couldn't start.
    Stopped {
        reason: Option<String>,
    },
}

/// How many of the gateway's newest jobs the Jobs tab shows.
const JOBS_SHOWN: u32 = 20;

/// What comes back from the service.
pub enum Event {
    /// The data dir as found at start: registered settings, or `None` for the wizard.
    Loaded {
        data_dir: PathBuf,
        settings: Option<NodeSettings>,
    },
    /// Setup worked; the service starts next.
    Registered(NodeSettings),
    /// The node's settings as stored after an operation changed them.
    Settings(NodeSettings),
    /// Setup failed; show `message` on `page`.
    SetupFailed {
        page: SetupPage,
        message: String,
    },
    Service(ServiceState),
    Status(Box<NodeStatus>),
    Log(LogLine),
    Tested(Vec<ConnectionTest>),
    /// The gateway's recent jobs, or why they can't be had.
    Jobs(Result<Vec<crate::protocol::JobView>, String>),
    /// An [`Op`] finished: a sentence saying what happened, or why it didn't.
    Done {
        op: ops::OpKind,
        result: Result<String, String>,
    },
    /// Add a node's answer: a key and its steps, the limit's sentence, the admin's command.
    AddNode(Result<AddNode, String>),
    /// Where the data dir's embedded hub is reached (`None`: it hosts none).
    HubReach(Option<Reach>),
    /// The embedded hub moved (its sentence), or why not.
    HubAccess(Result<String, String>),
}

/// This process's logging, as the window's service thread needs it: the feed of lines for
/// the Diagnostics tab, and a way to change the level live.
pub struct Logging {
    pub feed: LogFeed,
    /// Sets the level (`info`, `debug`, …); false if it can't.
    pub set_level: Box<dyn Fn(&str) -> bool + Send>,
}

/// Sends events to the window and wakes it up.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: std::sync::mpsc::Sender<Event>,
    repaint: Arc<Mutex<Option<egui::Context>>>,
}

impl EventSink {
    pub(crate) fn send(&self, event: Event) {
        // The window may be gone; then nobody needs the event.
        let _ = self.tx.send(event);
        if let Some(ctx) = self.repaint.lock().ok().and_then(|c| c.clone()) {
            ctx.request_repaint();
        }
    }
}

/// The window's handle to the service thread.
pub struct Service {
    /// `None` once the window is closing.
    requests: Option<mpsc::UnboundedSender<Request>>,
    events: std::sync::mpsc::Receiver<Event>,
    repaint: Arc<Mutex<Option<egui::Context>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Starts the service thread for the data dir `dir`; without a node there, it looks for
    /// the system service in `service_home`.
    pub fn start(
        dir: PathBuf,
        service_home: PathBuf,
        defaults: ExpressOptions,
        logging: Option<Logging>,
    ) -> Self {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (tx, events) = std::sync::mpsc::channel();
        let repaint = Arc::new(Mutex::new(None));
        let sink = EventSink { tx, repaint: Arc::clone(&repaint) };
        let spawned = std::thread::Builder::new().name("gatehouse-service".to_owned()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
            match runtime {
                Ok(runtime) => {
                    let (exited, exited_rx) = mpsc::unbounded_channel();
                    let feed = logging.as_ref().map(|l| l.feed.clone());
                    let mut backend = Backend::new(dir, defaults, feed, sink, exited);
                    backend.service_home = service_home;
                    runtime.block_on(backend.run(requests_rx, exited_rx, logging));
                }
                Err(e) => sink.send(Event::Service(ServiceState::Stopped {
                    reason: Some(format!("can't start the service's runtime: {e}")),
                })),
            }
        });
        let thread = spawned.map_err(|e| tracing::error!("can't start the service thread: {e}")).ok();
        Service { requests: Some(requests), events, repaint, thread }
    }

    /// Lets events wake the window up.
    pub fn set_repaint(&self, ctx: &egui::Context) {
        if let Ok(mut repaint) = self.repaint.lock()
            && repaint.is_none()
        {
            *repaint = Some(ctx.clone());
        }
    }

    pub fn send(&self, request: Request) {
        // The service thread lives as long as the window; if it died, the state shows why.
        if let Some(requests) = &self.requests {
            let _ = requests.send(request);
        }
    }

    /// The next event, if any; never blocks.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

impl Drop for Service {
    /// The window is closing: the service thread stops the node service and the embedded hub
    /// (each within a bounded time), so nothing is left half-done or holding a port.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How long closing the window waits for the service, then for the hub, to stop.
const STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// The `node run` process the window watches.
#[derive(Debug, Clone)]
struct Attachment {
    service: ServiceDir,
    /// Its data dir belongs to another user: nothing may be written there from this process.
    foreign: bool,
}

/// The service thread's state.
struct Backend {
    store: Store,
    defaults: ExpressOptions,
    /// This process's log lines, also served on the control socket.
    feed: Option<LogFeed>,
    events: EventSink,
    /// Stops what the window runs besides the host (log forwarding) when it closes.
    shutdown: CancellationToken,
    /// Runs the node service (and the embedded hub) in this process.
    host: Host,
    node: Option<Running>,
    /// Set while watching a `gatehouse node run` process.
    attached: Option<Attachment>,
    /// Where the system service keeps its data dir.
    service_home: PathBuf,
    /// The system service, once the window attached to it in place of a node of its own: what
    /// Start looks for again after it stopped.
    system: Option<Attachment>,
    /// Told when the service started as `generation` ends on its own: a watched `node run`
    /// process went away, or a Stop came through the control socket.
    exited: mpsc::UnboundedSender<(u64, Option<String>)>,
    /// Counts service starts, so a late word about an earlier one is ignored.
    generation: u64,
}

impl Backend {
    fn new(
        dir: PathBuf,
        defaults: ExpressOptions,
        feed: Option<LogFeed>,
        events: EventSink,
        exited: mpsc::UnboundedSender<(u64, Option<String>)>,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let store = Store::new(dir);
        Backend {
            host: Host::new(store.clone(), shutdown.child_token()),
            store,
            defaults,
            feed,
            events,
            shutdown,
            node: None,
            attached: None,
            service_home: crate::paths::service_home(),
            system: None,
            exited,
            generation: 0,
        }
    }

    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut exited: mpsc::UnboundedReceiver<(u64, Option<String>)>,
        logging: Option<Logging>,
    ) {
        if let Some(logging) = logging {
            tokio::spawn(forward_logs(logging.feed.subscribe(), self.events.clone(), self.shutdown.clone()));
            let level = self.store.settings().map_or_else(|_| "info".to_owned(), |s| s.log_level);
            let follow = crate::node::logs::follow_level(
                self.store.clone(),
                level,
                logging.set_level,
                self.shutdown.clone(),
            );
            tokio::spawn(follow);
        }
        self.load().await;
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => self.handle(request).await,
                    None => break,
                },
                Some((generation, reason)) = exited.recv() => self.ended(generation, reason).await,
            }
        }
        // The window closed: stop the service, then the hub, each within a bounded time.
        let _ = tokio::time::timeout(STOP_PATIENCE, self.stop_in_process()).await;
        self.host.stop(STOP_PATIENCE).await;
        self.shutdown.cancel();
    }

    /// Finds out what the data dir holds and starts (or attaches to) the service: without a
    /// node of its own, the window attaches to the system service if it runs.
    async fn load(&mut self) {
        let settings = self.store.settings().ok();
        if settings.is_none() && self.attach_elsewhere().await {
            return;
        }
        self.events.send(Event::Loaded { data_dir: self.store.dir().to_owned(), settings: settings.clone() });
        self.events.send(Event::HubReach(crate::host::hub_access::reach(&self.store)));
        if settings.is_some() {
            self.start_service().await;
        } else {
            self.events.send(Event::Service(ServiceState::Unregistered));
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Express => self.express().await,
            Request::Register(setup) => self.register(*setup).await,
            Request::Start => self.start_service().await,
            Request::Stop => self.stop().await,
            Request::TestConnections => self.test_connections(),
            Request::Op(op) => self.op(op).await,
            Request::Jobs => self.jobs(),
            Request::AddNodeKey => {
                let (store, events) = (self.store.clone(), self.events.clone());
                tokio::spawn(async move {
                    let made = node::add_node::add_node_key(&store, None).await.map_err(|e| e.to_string());
                    events.send(Event::AddNode(made));
                });
            }
            Request::HubAccess(access) => self.hub_access(access).await,
        }
    }

    /// Fetches the Jobs tab's list, off the request loop (a slow hub mustn't hold up Stop or
    /// an operation). A service the window watches answers through its control socket, having
    /// asked the hub with its own node token, which the window may not be able to read (the
    /// system service's is its user's and root's only); a node the window runs itself is
    /// asked for with this data dir's token.
    fn jobs(&self) {
        let events = self.events.clone();
        if let Some(attached) = &self.attached {
            let dir = attached.service.dir.clone();
            tokio::spawn(async move {
                let jobs = ControlClient::jobs(&dir, JOBS_SHOWN).await.map_err(|e| e.to_string());
                events.send(Event::Jobs(jobs));
            });
            return;
        }
        if let Some(dir) = self.elsewhere() {
            // The system service this window showed has stopped: nobody can ask the hub.
            events.send(Event::Jobs(Err(format!(
                "the node service of {} isn't running; its gateway's jobs show here again once it runs",
                dir.display()
            ))));
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let jobs = node::recent_jobs(&store, JOBS_SHOWN).await.map_err(|e| e.to_string());
            events.send(Event::Jobs(jobs));
        });
    }

    /// Moves the embedded hub: the service (and the hub) this window runs stop, the hub moves,
    /// the node follows it, and both start again. A `node run` process holds the hub itself.
    async fn hub_access(&mut self, access: Access) {
        if let Some(attached) = &self.attached {
            let dir = attached.service.dir.display();
            let command = match access {
                Access::Local => "gatehouse node hub-access local",
                Access::Network(_) => "gatehouse node hub-access network",
            };
            self.events.send(Event::HubAccess(Err(format!(
                "the embedded hub runs in the node service of {dir}, which this window only watches; move it from a terminal: {command}"
            ))));
            return;
        }
        let was_running = self.node.is_some();
        if was_running {
            self.events.send(Event::Service(ServiceState::Stopping));
            self.stop_in_process().await;
        }
        let moved = self.host.set_hub_access(access).await;
        self.events.send(Event::HubReach(crate::host::hub_access::reach(&self.store)));
        if let Ok(settings) = self.store.settings() {
            self.events.send(Event::Settings(settings));
        }
        self.events.send(Event::HubAccess(moved.map(|m| m.to_string()).map_err(|e| e.to_string())));
        if was_running {
            // Its own again, not a socket the stopped service may still hold for a moment.
            self.starting();
            self.start_own_service().await;
        }
    }

    /// Attaches to a service whose settings this process reads through the control socket:
    /// the system service (or one the person pointed GATEHOUSE_HOME at that this user can't
    /// read); true if it did.
    async fn attach_elsewhere(&mut self) -> bool {
        let Some((found, client)) = self.find().await else { return false };
        let settings = match ControlClient::settings(&found.dir).await {
            Ok(settings) => settings,
            Err(e) => {
                tracing::warn!("the node service of {} doesn't say its settings: {e}", found.dir.display());
                return false;
            }
        };
        self.events.send(Event::Loaded { data_dir: found.dir.clone(), settings: Some(settings) });
        self.generation += 1;
        self.watch(found, client).await
    }

    /// The service to attach to, if one answers (see [`find_service`]).
    async fn find(&self) -> Option<(ServiceDir, ControlClient)> {
        let registered = self.store.is_registered();
        match find_service(self.store.dir(), registered, &self.service_home).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("can't check for a running node service: {e}");
                None
            }
        }
    }

    /// The data dir of another user's service the window shows (attached now, or the system
    /// service it was attached to, in place of a node of its own): nothing is written there.
    fn elsewhere(&self) -> Option<PathBuf> {
        match &self.attached {
            Some(attached) if attached.foreign => Some(attached.service.dir.clone()),
            Some(_) => None,
            None => self
                .system
                .as_ref()
                .filter(|s| s.foreign && !self.store.is_registered())
                .map(|s| s.service.dir.clone()),
        }
    }

    /// The data dir of the service the window talks to.
    fn service_dir(&self) -> PathBuf {
        self.attached.as_ref().map_or_else(|| self.store.dir().to_owned(), |a| a.service.dir.clone())
    }

    /// Runs a Settings/Diagnostics operation, then shows the stored settings and restarts the
    /// service when the change needs it.
    async fn op(&mut self, op: Op) {
        let kind = op.kind();
        if let Some(dir) = self.elsewhere() {
            let result = Err(ops::elsewhere(&op, &dir));
            self.events.send(Event::Done { op: kind, result });
            return;
        }
        let context = ops::Context { store: &self.store, status: self.status() };
        let mut outcome = ops::run(op, context).await;
        let saved = outcome.result.is_ok();
        if saved && outcome.restart && self.attached.is_some() {
            // A `node run` process applies it at its next start; the window can't restart it.
            if let Ok(answer) = &mut outcome.result {
                answer.push_str("; restart gatehouse node run to apply it");
            }
        }
        self.events.send(Event::Done { op: kind, result: outcome.result });
        if !saved {
            return;
        }
        let Ok(settings) = self.store.settings() else { return };
        self.events.send(Event::Settings(settings.clone()));
        if self.node.is_some() && outcome.restart {
            self.stop_in_process().await;
            self.start_service().await;
        } else if kind == ops::OpKind::Restore && self.node.is_none() && self.attached.is_none() {
            // Restored onto an unregistered machine: it is a node now.
            self.events.send(Event::Registered(settings));
            self.start_service().await;
        }
    }

    /// The service of `generation` ended without the window asking.
    async fn ended(&mut self, generation: u64, reason: Option<String>) {
        if generation != self.generation || (self.attached.is_none() && self.node.is_none()) {
            return;
        }
        self.attached = None;
        self.stop_in_process().await;
        self.events.send(Event::Service(ServiceState::Stopped { reason }));
    }

    fn status(&self) -> Option<NodeStatus> {
        self.node.as_ref().map(|n| n.handle.status.borrow().clone())
    }

    async fn express(&mut self) {
        match self.host.express(&self.defaults).await {
            Ok(settings) => {
                self.events.send(Event::HubReach(crate::host::hub_access::reach(&self.store)));
                self.events.send(Event::Registered(settings));
                self.start_service().await;
            }
            Err(e) => {
                self.events.send(Event::SetupFailed { page: SetupPage::Welcome, message: e.to_string() });
            }
        }
    }

    async fn register(&mut self, setup: ManualSetup) {
        let tls = match &setup.certificate {
            None => None,
            Some(choice) => match load_identity(choice) {
                Ok(identity) => Some(identity),
                Err(message) => {
                    self.events.send(Event::SetupFailed { page: SetupPage::Encryption, message });
                    return;
                }
            },
        };
        let hub_ca = match setup.hub_ca.as_deref().map(node::read_hub_ca).transpose() {
            Ok(hub_ca) => hub_ca,
            Err(e) => {
                self.events.send(Event::SetupFailed { page: SetupPage::Key, message: e.to_string() });
                return;
            }
        };
        let registration = node::Registration {
            key: setup.key,
            name: Some(setup.name),
            peer_port: setup.port,
            peer_address: self.defaults.peer_host.as_ref().map(|host| format!("{host}:{}", setup.port)),
            tls,
            hub_ca,
        };
        match node::register(&self.store, registration).await {
            Ok(settings) => {
                self.events.send(Event::Registered(settings));
                self.start_service().await;
            }
            Err(e) => {
                let page = setup_page(&e);
                self.events.send(Event::SetupFailed { page, message: e.to_string() });
            }
        }
    }

    /// Attaches to a `node run` process if one runs here, else starts the service in this
    /// process (with the embedded hub, when this data dir hosts one).
    async fn start_service(&mut self) {
        if self.node.is_some() || self.attached.is_some() {
            return;
        }
        self.starting();
        if self.attach().await {
            return;
        }
        self.start_own_service().await;
    }

    /// A new start of the service begins: later word about an earlier one is ignored, and the
    /// window says Starting.
    fn starting(&mut self) {
        self.generation += 1;
        self.events.send(Event::Service(ServiceState::Starting));
    }

    /// Runs this data dir's node in this process (after [`Backend::start_service`] found no
    /// service to attach to, or right after this window stopped its own to move its hub).
    async fn start_own_service(&mut self) {
        if let Some(system) = &self.system
            && !self.store.is_registered()
        {
            // Attached to the system service before: this window has no node to run itself.
            let reason = format!(
                "the system service gatehouse-node ({}) isn't running; start it with: sudo systemctl start gatehouse-node",
                system.service.dir.display()
            );
            self.events.send(Event::Service(ServiceState::Stopped { reason: Some(reason) }));
            return;
        }
        let feed = self.feed.clone().unwrap_or_else(|| LogFeed::new(1));
        // The control socket first: it refuses when a `node run` started meanwhile, and lets
        // `gatehouse node status` and a second window find this service.
        match self.host.start(Box::new(SystemMetrics::new()), feed).await {
            Ok(running) => {
                tokio::spawn(forward_status(running.handle.status.clone(), self.events.clone()));
                let (stopped, generation, exited) =
                    (running.handle.shutdown.clone(), self.generation, self.exited.clone());
                tokio::spawn(async move {
                    stopped.cancelled().await;
                    let _ = exited.send((generation, None));
                });
                self.node = Some(running);
                self.events.send(Event::Service(ServiceState::Running));
            }
            Err(HostError::Control(ControlError::AlreadyRunning { .. })) if self.attach().await => {}
            Err(e) => {
                self.events.send(Event::Service(ServiceState::Stopped { reason: Some(e.to_string()) }));
            }
        }
    }

    /// Watches a `gatehouse node run` of this data dir (or the system service, when this
    /// one has no node), if one answers on its control socket.
    async fn attach(&mut self) -> bool {
        let Some((found, client)) = self.find().await else { return false };
        self.watch(found, client).await
    }

    /// Watches the service `client` is connected to.
    async fn watch(&mut self, found: ServiceDir, client: ControlClient) -> bool {
        let (hello, mut watched) = match client.watch().await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!("a node service answers on the control socket, but not to a watch: {e}");
                return false;
            }
        };
        tracing::info!(pid = hello.pid, dir = %found.dir.display(), "attached to the running node service");
        let foreign = owner_uid(&found.dir) != owner_uid(std::path::Path::new("/proc/self"));
        let attached = Attachment { service: found, foreign };
        self.events.send(Event::Service(ServiceState::Attached {
            pid: hello.pid,
            data_dir: attached.service.dir.clone(),
            system: attached.service.system,
        }));
        let who = if attached.service.system {
            format!("the system service gatehouse-node (pid {})", hello.pid)
        } else {
            format!("the node service (gatehouse node run, pid {})", hello.pid)
        };
        if attached.service.system && !self.store.is_registered() {
            self.system = Some(attached.clone());
        }
        self.attached = Some(attached);
        let (events, exited, generation) = (self.events.clone(), self.exited.clone(), self.generation);
        tokio::spawn(async move {
            let mut stopping = false;
            while let Some(event) = watched.recv().await {
                match event {
                    ControlEvent::Status(status) => events.send(Event::Status(status)),
                    ControlEvent::Log(line) => events.send(Event::Log(line)),
                    ControlEvent::Stopping => stopping = true,
                    ControlEvent::Hello(_)
                    | ControlEvent::Tested(_)
                    | ControlEvent::Settings(_)
                    | ControlEvent::Updating { .. }
                    | ControlEvent::Jobs(_)
                    | ControlEvent::Failed { .. } => {}
                }
            }
            let reason = (!stopping).then(|| format!("{who} stopped or can't be reached"));
            let _ = exited.send((generation, reason));
        });
        true
    }

    async fn stop(&mut self) {
        if self.attached.is_some() {
            self.events.send(Event::Service(ServiceState::Stopping));
            if let Err(e) = ControlClient::stop(&self.service_dir()).await {
                let reason = Some(format!("can't stop the node service: {e}"));
                self.events.send(Event::Service(ServiceState::Stopped { reason }));
            }
            // The watch ends when the process stops; that reports Stopped.
            return;
        }
        if self.node.is_some() {
            self.events.send(Event::Service(ServiceState::Stopping));
            self.stop_in_process().await;
            self.events.send(Event::Service(ServiceState::Stopped { reason: None }));
        }
    }

    async fn stop_in_process(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop().await;
        }
    }

    fn test_connections(&mut self) {
        if self.attached.is_some() {
            let (dir, events) = (self.service_dir(), self.events.clone());
            tokio::spawn(async move {
                let tests = ControlClient::test_connections(&dir).await.unwrap_or_else(|e| {
                    vec![ConnectionTest {
                        target: "node service".to_owned(),
                        address: dir.display().to_string(),
                        ok: false,
                        millis: 0,
                        message: e.to_string(),
                    }]
                });
                events.send(Event::Tested(tests));
            });
            return;
        }
        let Some(node) = &self.node else {
            self.events.send(Event::Tested(Vec::new()));
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = node.handle.commands.send(NodeCommand::TestConnections(tx));
        let events = self.events.clone();
        tokio::spawn(async move {
            events.send(Event::Tested(rx.await.unwrap_or_default()));
        });
    }
}

/// The owner of `path` (`/proc/self`: this process's user), if it can be told.
fn owner_uid(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.uid())
}

/// The certificates of the "Trusted root CA" file, none without one; a sentence if unreadable.
pub(crate) fn read_roots(path: Option<&std::path::Path>) -> Result<Vec<Vec<u8>>, String> {
    path.map_or_else(
        || Ok(Vec::new()),
        |path| crate::cert::read_roots(path).map_err(|e| format!("trusted root CA file: {e}")),
    )
}

/// Reads and checks the chosen certificate; a sentence when it can't be used.
pub(crate) fn load_identity(choice: &CertificateChoice) -> Result<crate::cert::Identity, String> {
    let extra_roots = read_roots(choice.roots.as_deref())?;
    let options =
        crate::cert::Options { password: choice.password.clone(), extra_roots, ..Default::default() };
    match crate::cert::identity(&choice.path, &options) {
        Ok((_, Some(identity))) => Ok(identity),
        Ok((report, None)) => Err(format!(
            "the certificate can't be used ({}); fix what the report marks as failed",
            report.verdict
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Which wizard page a registration error belongs to: by the hub's refusal code, never by
/// its sentence.
fn setup_page(error: &node::NodeError) -> SetupPage {
    match error {
        node::NodeError::Tls(_) | node::NodeError::PeerPort { .. } => SetupPage::Encryption,
        _ => page_of_refusal(error.refusal().and_then(|body| body.code)),
    }
}

/// The wizard page of a hub refusal with `code` (none: the key page, where it started).
fn page_of_refusal(code: Option<crate::protocol::ErrorCode>) -> SetupPage {
    use crate::protocol::ErrorCode;
    match code {
        Some(ErrorCode::NameTaken) => SetupPage::Name,
        Some(ErrorCode::NeedsEncryption | ErrorCode::EncryptionModeLocked) => SetupPage::Encryption,
        _ => SetupPage::Key,
    }
}

/// Sends every status change to the window until the service stops.
async fn forward_status(mut status: tokio::sync::watch::Receiver<NodeStatus>, events: EventSink) {
    loop {
        let current = status.borrow_and_update().clone();
        events.send(Event::Status(Box::new(current)));
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Sends this process's log lines to the window.
async fn forward_logs(
    mut lines: tokio::sync::broadcast::Receiver<LogLine>,
    events: EventSink,
    shutdown: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            () = shutdown.cancelled() => return,
            line = lines.recv() => line,
        };
        match line {
            Ok(line) => events.send(Event::Log(line)),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn the_wizard_page_follows_the_refusal_code_not_the_sentence() {
        assert_eq!(page_of_refusal(Some(ErrorCode::NameTaken)), SetupPage::Name);
        assert_eq!(page_of_refusal(Some(ErrorCode::NeedsEncryption)), SetupPage::Encryption);
        assert_eq!(page_of_refusal(Some(ErrorCode::EncryptionModeLocked)), SetupPage::Encryption);
        assert_eq!(page_of_refusal(Some(ErrorCode::GatewayFull)), SetupPage::Key);
        // A refusal without a code (an older hub: a sentence alone) decides nothing.
        assert_eq!(page_of_refusal(None), SetupPage::Key);
    }
}
