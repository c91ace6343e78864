//! One worker: a thread pinned to a core running its own monoio event loop, accepting on its
//! own SO_REUSEPORT listeners. Nothing is shared between workers but the registry handle.

use super::connection::{refuse, serve, ConnSettings};
use super::signal::LocalSignal;
use crate::api::Registry;
use crate::meta::now_millis;
use futures_channel::oneshot;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

pub struct WorkerSetup {
    pub index: usize,
    pub listeners: Vec<std::net::TcpListener>,
    pub registry: Arc<Registry>,
    pub settings: ConnSettings,
    pub shutdown: oneshot::Receiver<()>,
    pub grace: Duration,
    /// Worker 0 also expires abandoned upload sessions.
    pub sweep_uploads: Option<Duration>,
    /// Connections served at once by all workers together; more are refused with 503.
    pub max_connections: usize,
    /// Connections open across all workers (one atomic add per connection, not per request).
    pub open_connections: Arc<AtomicUsize>,
}

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

pub fn spawn(
    setup: WorkerSetup,
    ready: mpsc::Sender<Result<&'static str, String>>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("ringyard-w{}", setup.index))
        .spawn(move || {
            let cores = thread::available_parallelism().map_or(1, |n| n.get());
            let _ = monoio::utils::bind_to_cpu_set([setup.index % cores]);
            let (mut rt, driver) = match build_runtime() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(driver));
            rt.block_on(run(setup));
        })
}

async fn run(setup: WorkerSetup) {
    let signal = LocalSignal::new();
    let active = Rc::new(Cell::new(0usize));
    for l in setup.listeners {
        let listener = match monoio::net::TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                crate::log::error(format_args!("worker {}: listener: {e}", setup.index));
                continue;
            }
        };
        monoio::spawn(accept_loop(
            listener,
            setup.registry.clone(),
            setup.settings,
            signal.clone(),
            Admission {
                active: active.clone(),
                open: setup.open_connections.clone(),
                refusing: Rc::new(Cell::new(0)),
                max: setup.max_connections,
            },
        ));
    }
    monoio::spawn(super::cpu_yield::run());
    if let Some(every) = setup.sweep_uploads {
        monoio::spawn(sweep_loop(setup.registry.clone(), every, signal.clone()));
    }
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
}

/// The connection limit, as one worker applies it.
struct Admission {
    /// This worker's connections (what a graceful stop waits for).
    active: Rc<Cell<usize>>,
    /// All workers' connections, against `max`.
    open: Arc<AtomicUsize>,
    /// Connections this worker is answering 503; bounded too, so a flood cannot pile them up.
    refusing: Rc<Cell<usize>>,
    max: usize,
}

async fn accept_loop(
    listener: monoio::net::TcpListener,
    reg: Arc<Registry>,
    settings: ConnSettings,
    signal: LocalSignal,
    admission: Admission,
) {
    let Admission {
        active,
        open,
        refusing,
        max,
    } = admission;
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = signal.wait() => break,
        };
        match accepted {
            Ok((stream, _peer)) if open.load(Ordering::Relaxed) >= max => {
                if refusing.get() < max {
                    refusing.set(refusing.get() + 1);
                    let refusing = refusing.clone();
                    monoio::spawn(async move {
                        refuse(stream, settings).await;
                        refusing.set(refusing.get() - 1);
                    });
                }
            }
            Ok((stream, _peer)) => {
                active.set(active.get() + 1);
                open.fetch_add(1, Ordering::Relaxed);
                let (reg, signal, active, open) =
                    (reg.clone(), signal.clone(), active.clone(), open.clone());
                monoio::spawn(async move {
                    serve(stream, reg, settings, signal).await;
                    active.set(active.get() - 1);
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                crate::log::warn(format_args!("accept: {e}"));
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Dropping the listener here closes the port for new connections at once.
    drop(listener);
}

async fn sweep_loop(reg: Arc<Registry>, every: Duration, signal: LocalSignal) {
    loop {
        monoio::select! {
            _ = monoio::time::sleep(every) => {},
            _ = signal.wait() => return,
        }
        for session in reg.uploads.take_expired(now_millis()) {
            match reg.uploads.discard(&reg.pool, &reg.meta, &session).await {
                Ok(()) => crate::log::info(format_args!("upload session {} expired", session.id)),
                Err(e) => crate::log::warn(format_args!("expiring upload {}: {e}", session.id)),
            }
        }
    }
}
