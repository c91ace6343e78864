//! One worker: a thread pinned to a core running its own monoio event loop, accepting on its
//! own SO_REUSEPORT listeners. Nothing is shared between workers but the registry handle and
//! the balancer's counts.

use super::balance::{Balancer, Handoff, Slot};
use super::connection::{open, ConnCtx, ConnSettings, Task};
use crate::api::{Registry, Site};
use crate::http::tls_config::TlsConfig;
use crate::signal::LocalSignal;
use crate::store::open_cache;
use futures_channel::{mpsc as async_mpsc, oneshot};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

pub struct WorkerSetup {
    pub index: usize,
    pub listeners: Vec<std::net::TcpListener>,
    /// On `metrics_listen`: metrics and probes only, outside the connection limit.
    pub ops_listeners: Vec<std::net::TcpListener>,
    pub registry: Arc<Registry>,
    pub settings: ConnSettings,
    pub shutdown: oneshot::Receiver<()>,
    pub grace: Duration,
    /// Connections served at once by all workers together; more are refused with 503.
    /// (They are counted by the balancer: atomic adds per connection, not per request.)
    pub max_connections: usize,
    pub balancer: Arc<Balancer>,
    /// Connections other workers accepted and passed to this one.
    pub inbox: async_mpsc::UnboundedReceiver<Handoff>,
    /// The registry listeners speak TLS with this configuration (current at each handshake).
    pub tls: Option<Arc<TlsConfig>>,
}

/// Connections one worker serves at once on the operations listener; more are closed at once.
/// Probes and scrapes need few, and this listener is outside the connection limit.
const MAX_OPS_CONNECTIONS: usize = 64;

/// How often a worker does its periodic chores ([`tick_loop`]).
const TICK_EVERY: Duration = Duration::from_millis(100);

type Rt = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

type UringSetup = fn(&mut io_uring::Builder);

/// io_uring with DEFER_TASKRUN (completions run only when this thread asks, which was
/// measured to cut the p99 markedly), then COOP_TASKRUN, then plain io_uring, then epoll.
fn build_runtime() -> Result<(Rt, &'static str), String> {
    let force_epoll = std::env::var("RINGYARD_DRIVER").is_ok_and(|v| v == "epoll");
    if !force_epoll {
        let attempts: [(&str, UringSetup); 3] = [
            ("io_uring, DEFER_TASKRUN", |b| {
                b.setup_single_issuer().setup_defer_taskrun();
            }),
            ("io_uring, COOP_TASKRUN", |b| {
                b.setup_coop_taskrun();
            }),
            ("io_uring", |_| {}),
        ];
        for (name, setup) in attempts {
            let mut b = io_uring::IoUring::builder();
            setup(&mut b);
            let built = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(1024)
                .uring_builder(b)
                .enable_timer()
                .build();
            if let Ok(rt) = built {
                return Ok((rt.into(), name));
            }
        }
    }
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .map(|rt| (rt.into(), "epoll"))
        .map_err(|e| format!("cannot start an event loop: {e}"))
}

/// The CPU worker `index` is pinned to; its listeners ask for that CPU's connections.
pub fn cpu_of(index: usize) -> usize {
    index % thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn spawn(
    setup: WorkerSetup,
    ready: mpsc::Sender<Result<&'static str, String>>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("ringyard-w{}", setup.index))
        .spawn(move || {
            let _ = monoio::utils::bind_to_cpu_set([cpu_of(setup.index)]);
            let (mut rt, driver) = match build_runtime() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            if driver != "epoll" {
                crate::http::direct::enable();
            }
            let _ = ready.send(Ok(driver));
            rt.block_on(run(setup));
        })
}

async fn run(setup: WorkerSetup) {
    crate::log::buffer_this_thread();
    monoio::spawn(tick_loop());
    if !setup.registry.limits.read_only {
        monoio::spawn(pull_flush_loop(setup.registry.clone()));
    }
    let signal = LocalSignal::new();
    let active = Rc::new(Cell::new(0usize));
    let ctx = Rc::new(ConnCtx {
        reg: setup.registry.clone(),
        settings: setup.settings,
        shutdown: signal.clone(),
        obs: setup.registry.ops.worker(setup.index),
        tls: setup.tls.clone(),
    });
    let listeners = setup.listeners.into_iter().map(|l| (l, Site::Registry));
    let ops_listeners = setup.ops_listeners.into_iter().map(|l| (l, Site::Ops));
    for (l, site) in listeners.chain(ops_listeners) {
        let listener = match monoio::net::TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                crate::log::error(format_args!("worker {}: listener: {e}", setup.index));
                continue;
            }
        };
        let admission = Admission {
            active: active.clone(),
            refusing: Rc::new(Cell::new(0)),
            ops_open: Rc::new(Cell::new(0)),
            max: setup.max_connections,
            balancer: setup.balancer.clone(),
            me: setup.index,
        };
        monoio::spawn(accept_loop(listener, site, ctx.clone(), admission));
    }
    monoio::spawn(inbox_loop(setup.inbox, ctx.clone(), active.clone()));
    monoio::spawn(super::cpu_yield::run());
    // A dropped sender means the process is going down as well.
    let _ = setup.shutdown.await;
    signal.fire();
    let deadline = Instant::now() + setup.grace;
    while active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if active.get() > 0 {
        crate::log::warn(format_args!(
            "worker {}: {} connection(s) still busy after the grace period; closing them",
            setup.index,
            active.get()
        ));
    }
    setup.registry.meta.flush_pulls();
    crate::log::end_thread();
}

/// Now and then hands the worker's buffered log lines to the logger thread, and closes its
/// cached blob files if another worker ran out of descriptors (an idle worker would otherwise
/// keep them); ends with the event loop.
async fn tick_loop() {
    loop {
        monoio::time::sleep(TICK_EVERY).await;
        crate::log::flush_thread();
        open_cache::heed_pressure();
    }
}

/// How often a worker writes the manifest pulls it noted (see `Meta::note_pull`).
const PULL_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Writes this worker's noted pulls now and then; ends with the event loop.
async fn pull_flush_loop(reg: Arc<Registry>) {
    loop {
        monoio::time::sleep(PULL_FLUSH_EVERY).await;
        reg.meta.flush_pulls();
    }
}

/// The connection limit and balancing, as one worker applies them.
struct Admission {
    /// This worker's connections (what a graceful stop waits for).
    active: Rc<Cell<usize>>,
    /// Connections this worker is answering 503; bounded too, so a flood cannot pile them up.
    refusing: Rc<Cell<usize>>,
    /// This listener's connections, when it is an operations listener.
    ops_open: Rc<Cell<usize>>,
    max: usize,
    /// All workers' client connections, against `max`, and where each is served.
    balancer: Arc<Balancer>,
    /// This worker's index.
    me: usize,
}

/// Runs `serve` for one connection, counting it in `counters` (and in the balancer through
/// its slot) while it lasts.
fn spawn_counted(
    stream: monoio::net::TcpStream,
    peer: Option<std::net::SocketAddr>,
    site: Site,
    ctx: &Rc<ConnCtx>,
    counters: Vec<Rc<Cell<usize>>>,
    slot: Option<Slot>,
) {
    for c in &counters {
        c.set(c.get() + 1);
    }
    let ctx = ctx.clone();
    monoio::spawn(async move {
        open(stream, peer, site, Task::Serve, ctx).await;
        for c in &counters {
            c.set(c.get() - 1);
        }
        drop(slot);
    });
}

async fn accept_loop(
    listener: monoio::net::TcpListener,
    site: Site,
    ctx: Rc<ConnCtx>,
    admission: Admission,
) {
    let Admission {
        active,
        refusing,
        ops_open,
        max,
        balancer,
        me,
    } = admission;
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = ctx.shutdown.wait() => break,
        };
        match accepted {
            Ok((stream, peer)) if site == Site::Ops => {
                // Over the bound, the stream is dropped: closed without an answer.
                if ops_open.get() < MAX_OPS_CONNECTIONS {
                    let counters = vec![active.clone(), ops_open.clone()];
                    spawn_counted(stream, Some(peer), site, &ctx, counters, None);
                }
            }
            Ok((stream, peer)) if balancer.open() >= max => {
                if refusing.get() < max {
                    refusing.set(refusing.get() + 1);
                    let (refusing, ctx) = (refusing.clone(), ctx.clone());
                    monoio::spawn(async move {
                        open(stream, Some(peer), site, Task::Refuse, ctx).await;
                        refusing.set(refusing.get() - 1);
                    });
                }
            }
            Ok((stream, peer)) => {
                let slot = balancer.admit(me);
                if slot.worker() == me {
                    let counters = vec![active.clone()];
                    spawn_counted(stream, Some(peer), site, &ctx, counters, Some(slot));
                } else {
                    use std::os::fd::{FromRawFd, IntoRawFd};
                    // SAFETY: the descriptor was just taken out of the freshly accepted
                    // stream, which no longer owns it; the std stream owns it from here.
                    let stream = unsafe { std::net::TcpStream::from_raw_fd(stream.into_raw_fd()) };
                    balancer.hand_off(Handoff { stream, peer, slot });
                }
            }
            Err(e) => {
                // Out of descriptors: cached blob files are the ones that can go, in every
                // worker (the others close theirs within a tick). Either way, back off instead
                // of spinning; the connection waits in the backlog meanwhile.
                if open_cache::out_of_descriptors(&e) {
                    open_cache::release();
                    crate::log::warn(format_args!("accept: {e}; closing cached blob files"));
                } else {
                    crate::log::warn(format_args!("accept: {e}"));
                }
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Dropping the listener here closes the port for new connections at once.
    drop(listener);
}

/// Serves the connections other workers pass to this one, until the worker stops; any still
/// queued then are closed with the inbox.
async fn inbox_loop(
    mut inbox: async_mpsc::UnboundedReceiver<Handoff>,
    ctx: Rc<ConnCtx>,
    active: Rc<Cell<usize>>,
) {
    use futures_core::Stream;
    loop {
        let next = monoio::select! {
            h = std::future::poll_fn(|cx| std::pin::Pin::new(&mut inbox).poll_next(cx)) => h,
            _ = ctx.shutdown.wait() => break,
        };
        let Some(Handoff { stream, peer, slot }) = next else {
            break;
        };
        match monoio::net::TcpStream::from_std(stream) {
            Ok(stream) => {
                let counters = vec![active.clone()];
                spawn_counted(
                    stream,
                    Some(peer),
                    Site::Registry,
                    &ctx,
                    counters,
                    Some(slot),
                );
            }
            Err(e) => crate::log::warn(format_args!("taking over a connection: {e}")),
        }
    }
}
