//! The scheduler: which models are loaded, for how long, and who may use them.
//!
//! It keeps one [`Runner`] per loaded model and hands out [`Lease`]s. A lease
//! keeps the model loaded; when the last lease of a model drops, its
//! `keep_alive` timer starts. A background task unloads expired models. Before
//! loading, idle models are unloaded to respect `OLLAMA_MAX_LOADED_MODELS`
//! and the machine's available memory. Policy decisions (what to evict, does
//! it fit, when does it expire) are pure functions tested without a model.
//! It knows nothing of HTTP; the api module turns [`Error`] into statuses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::engine::{self, CpuBudget, KvType, LoadParams, Runner};

/// What can go wrong while getting a model ready.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Too many requests are waiting.
    #[error("server busy, please try again.  maximum pending requests exceeded")]
    Busy,
    /// The engine refused to load the model.
    #[error("{0}")]
    Load(#[from] engine::Error),
    /// Not enough memory even after unloading idle models.
    #[error(
        "model requires more system memory ({needed} bytes) than is available ({available} bytes)"
    )]
    NoMemory {
        /// Estimated bytes the model needs.
        needed: u64,
        /// Bytes the system has available.
        available: u64,
    },
    /// The loader thread died.
    #[error("model load was interrupted")]
    Interrupted,
}

/// Load-time settings: a loaded model is reused only when these match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadKey {
    /// Weights file.
    pub path: PathBuf,
    /// Context per sequence.
    pub num_ctx: u32,
    /// Prompt batch.
    pub num_batch: u32,
    /// Threads (0 = the CPU budget's cores).
    pub num_thread: u32,
    /// Memory-map weights.
    pub use_mmap: bool,
    /// Loaded for embeddings.
    pub embeddings: bool,
    /// Sequences for an embedding load (0 = one); generative loads use
    /// `OLLAMA_NUM_PARALLEL`.
    pub embed_seqs: u32,
    /// The vision projector loaded with the weights, if any.
    pub projector: Option<PathBuf>,
}

/// How long a model stays loaded after its last request: `None` is forever.
pub type KeepAlive = Option<Duration>;

#[derive(Debug)]
struct Loaded {
    runner: Arc<Runner>,
    key: LoadKey,
    /// The name `/api/ps` shows and its manifest digest.
    display: String,
    digest: String,
    leases: usize,
    keep_alive: KeepAlive,
    /// When an idle model expires; `None` while in use or kept forever.
    expires_at: Option<Instant>,
    /// Wall-clock expiry for `/api/ps`.
    expires_wall: Option<SystemTime>,
    last_used: Instant,
    /// Unload as soon as the last lease drops.
    unload_when_idle: bool,
}

/// A model in use by one request. Dropping it releases the model.
#[derive(Debug)]
pub struct Lease {
    sched: Arc<Scheduler>,
    /// The loaded model.
    pub runner: Arc<Runner>,
    key: LoadKey,
    /// Time from asking for the model until it was ready: its load, or a
    /// wait for a slot, or next to nothing when it was loaded and free.
    /// Ollama's `load_duration` measures the same span (handler entry to
    /// scheduled runner, `server/routes.go` at v0.33), so it is never zero.
    pub load_duration: Duration,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.sched.release(&self.key);
        self.sched.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What `/api/ps` reports for one loaded model.
#[derive(Debug, Clone)]
pub struct Running {
    /// Short name.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// Runner memory estimate.
    pub size_bytes: u64,
    /// Expiry; `None` = forever, else wall time.
    pub expires_at: Option<SystemTime>,
    /// Context length per sequence.
    pub context_length: u32,
}

/// Settings the scheduler works with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Models loaded at once.
    pub max_loaded: usize,
    /// Requests in flight (running or waiting) before 503.
    pub max_queue: usize,
    /// Parallel sequences per generative model.
    pub num_parallel: u32,
    /// Default keep-alive.
    pub keep_alive: KeepAlive,
    /// KV cache element type for every model.
    pub kv_type: KvType,
    /// Flash attention; `None` lets llama.cpp decide.
    pub flash_attention: Option<bool>,
}

/// The scheduler. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Scheduler {
    settings: Settings,
    cpu: Arc<CpuBudget>,
    loaded: Mutex<Vec<Loaded>>,
    /// Serialises loads: loading is CPU- and memory-bound, and two loads of
    /// the same model must not both happen.
    load_lock: tokio::sync::Mutex<()>,
    queued: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Scheduler {
    /// A scheduler whose runners share `cpu`.
    pub fn new(settings: Settings, cpu: Arc<CpuBudget>) -> Arc<Scheduler> {
        let s = Arc::new(Scheduler {
            settings,
            cpu,
            loaded: Mutex::new(Vec::new()),
            load_lock: tokio::sync::Mutex::new(()),
            queued: AtomicUsize::new(0),
            changed: tokio::sync::Notify::new(),
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { break };
                s.expire(Instant::now());
            }
        });
        s
    }

    fn state(&self) -> MutexGuard<'_, Vec<Loaded>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The default keep-alive.
    pub fn default_keep_alive(&self) -> KeepAlive {
        self.settings.keep_alive
    }

    /// Gets a loaded model for a request, loading it if needed.
    pub async fn acquire(
        self: &Arc<Self>,
        key: LoadKey,
        names: (&str, &str),
        keep_alive: KeepAlive,
    ) -> Result<Lease, Error> {
        let in_flight = self.queued.fetch_add(1, Ordering::SeqCst);
        let guard = QueueSlot(self);
        let capacity = self.settings.max_queue
            + self.settings.num_parallel as usize * self.settings.max_loaded;
        if in_flight >= capacity {
            return Err(Error::Busy);
        }
        let started = Instant::now();
        loop {
            if let Some(runner) = self.try_reuse(&key, keep_alive) {
                std::mem::forget(guard);
                return Ok(self.lease(runner, key, started.elapsed()));
            }
            let _load = self.load_lock.lock().await;
            if let Some(runner) = self.try_reuse(&key, keep_alive) {
                std::mem::forget(guard);
                return Ok(self.lease(runner, key, started.elapsed()));
            }
            // The same model loaded with other load-time options, and busy:
            // wait for it to go idle, then reload.
            let busy_other = self
                .state()
                .iter()
                .any(|l| l.key.path == key.path && l.key != key && l.leases > 0);
            // Every loaded model busy and no room for one more: wait for
            // one to finish, as Ollama queues such requests.
            let full = !busy_other && {
                self.unload_where(|l| l.key.path == key.path && l.leases == 0);
                self.make_room(&key)? == Room::Busy
            };
            if busy_other || full {
                drop(_load);
                let notified = self.changed.notified();
                tokio::select! {
                    () = notified => {},
                    () = tokio::time::sleep(Duration::from_millis(200)) => {},
                }
                continue;
            }
            let params = LoadParams {
                n_ctx: key.num_ctx,
                n_batch: key.num_batch,
                n_threads: if key.num_thread == 0 {
                    self.cpu.cores()
                } else {
                    key.num_thread as usize
                },
                n_parallel: if key.embeddings {
                    key.embed_seqs.max(1)
                } else {
                    self.settings.num_parallel
                },
                embeddings: key.embeddings,
                use_mmap: key.use_mmap,
                kv_type: self.settings.kv_type,
                flash_attention: self.settings.flash_attention,
                projector: key.projector.clone(),
            };
            let cpu = Arc::clone(&self.cpu);
            let path = key.path.clone();
            let runner = tokio::task::spawn_blocking(move || Runner::load(&path, params, cpu))
                .await
                .map_err(|_| Error::Interrupted)??;
            let runner = Arc::new(runner);
            log::info!(
                "loaded {} in {:?} ({} MiB, ctx {} x {}, kv {})",
                names.0,
                started.elapsed(),
                runner.info().size_bytes >> 20,
                runner.info().n_ctx,
                runner.info().n_parallel,
                self.settings.kv_type.name()
            );
            let now = Instant::now();
            self.state().push(Loaded {
                runner: Arc::clone(&runner),
                key: key.clone(),
                display: names.0.to_string(),
                digest: names.1.to_string(),
                leases: 1,
                keep_alive,
                expires_at: None,
                expires_wall: None,
                last_used: now,
                unload_when_idle: false,
            });
            std::mem::forget(guard);
            return Ok(Lease {
                sched: Arc::clone(self),
                runner,
                key,
                load_duration: started.elapsed(),
            });
        }
    }

    fn lease(
        self: &Arc<Self>,
        runner: Arc<Runner>,
        key: LoadKey,
        load_duration: Duration,
    ) -> Lease {
        Lease {
            sched: Arc::clone(self),
            runner,
            key,
            load_duration,
        }
    }

    fn try_reuse(&self, key: &LoadKey, keep_alive: KeepAlive) -> Option<Arc<Runner>> {
        let mut st = self.state();
        let l = st.iter_mut().find(|l| l.key == *key)?;
        l.leases += 1;
        l.keep_alive = keep_alive;
        l.expires_at = None;
        l.expires_wall = None;
        l.unload_when_idle = false;
        l.last_used = Instant::now();
        Some(Arc::clone(&l.runner))
    }

    /// Unloads idle models until one more fits the model count and memory;
    /// `Busy` when the count is reached and every loaded model is in use.
    fn make_room(&self, key: &LoadKey) -> Result<Room, Error> {
        let needed = estimate_bytes(key, self.settings.num_parallel);
        loop {
            let (count, idle) = {
                let st = self.state();
                let idle: Vec<(Instant, PathBuf)> = st
                    .iter()
                    .filter(|l| l.leases == 0)
                    .map(|l| (l.last_used, l.key.path.clone()))
                    .collect();
                (st.len(), idle)
            };
            let available = available_memory().unwrap_or(u64::MAX);
            let fits = count < self.settings.max_loaded && needed <= available;
            if fits {
                return Ok(Room::Ready);
            }
            let Some(victim) = pick_victim(&idle) else {
                if needed > available {
                    return Err(Error::NoMemory { needed, available });
                }
                log::debug!("all {count} loaded models are busy; waiting for one");
                return Ok(Room::Busy);
            };
            log::info!("unloading idle model {} to make room", victim.display());
            self.unload_where(|l| l.key.path == victim && l.leases == 0);
        }
    }

    fn release(&self, key: &LoadKey) {
        let mut unload = false;
        {
            let mut st = self.state();
            if let Some(l) = st.iter_mut().find(|l| l.key == *key) {
                l.leases = l.leases.saturating_sub(1);
                l.last_used = Instant::now();
                if l.leases == 0 {
                    match expiry(l.keep_alive, l.unload_when_idle) {
                        Expiry::Now => unload = true,
                        Expiry::Never => {
                            l.expires_at = None;
                            l.expires_wall = None;
                        }
                        Expiry::After(d) => {
                            l.expires_at = Some(Instant::now() + d);
                            l.expires_wall = Some(SystemTime::now() + d);
                        }
                    }
                }
            }
        }
        if unload {
            self.unload_where(|l| l.key == *key && l.leases == 0);
        }
        self.changed.notify_waiters();
    }

    /// Unloads a model now if idle, or as soon as its requests finish.
    /// Returns whether it was loaded.
    pub fn unload_path(&self, path: &std::path::Path) -> bool {
        let mut found = false;
        {
            let mut st = self.state();
            for l in st.iter_mut().filter(|l| l.key.path == path) {
                found = true;
                l.unload_when_idle = true;
                l.keep_alive = Some(Duration::ZERO);
            }
        }
        self.unload_where(|l| l.key.path == path && l.leases == 0);
        found
    }

    fn unload_where(&self, pred: impl Fn(&Loaded) -> bool) {
        let removed: Vec<Loaded> = {
            let mut st = self.state();
            let (gone, keep): (Vec<Loaded>, Vec<Loaded>) = st.drain(..).partition(|l| pred(l));
            *st = keep;
            gone
        };
        for l in removed {
            log::info!("unloading {}", l.display);
            // Dropping the last Arc joins the runner thread, which can take a
            // moment; do it off the caller's (possibly async) thread.
            std::thread::spawn(move || drop(l));
        }
        self.changed.notify_waiters();
    }

    fn expire(&self, now: Instant) {
        self.unload_where(|l| l.leases == 0 && l.expires_at.is_some_and(|t| t <= now));
    }

    /// Unloads everything (shutdown).
    pub fn unload_all(&self) {
        let all: Vec<Loaded> = self.state().drain(..).collect();
        drop(all);
    }

    /// Loaded models, latest expiry first.
    pub fn running(&self) -> Vec<Running> {
        let st = self.state();
        let mut out: Vec<Running> = st
            .iter()
            .map(|l| Running {
                name: l.display.clone(),
                digest: l.digest.clone(),
                size_bytes: l.runner.info().size_bytes,
                expires_at: match (l.leases, l.keep_alive) {
                    (_, None) => None,
                    (0, _) => l.expires_wall,
                    (_, Some(d)) => Some(SystemTime::now() + d),
                },
                context_length: l.runner.info().n_ctx,
            })
            .collect();
        out.sort_by(|a, b| match (a.expires_at, b.expires_at) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, _) => std::cmp::Ordering::Less,
            (_, None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => y.cmp(&x),
        });
        out
    }
}

/// Whether another model can be loaded now.
#[derive(Debug, PartialEq, Eq)]
enum Room {
    /// It fits (idle models were unloaded if needed).
    Ready,
    /// The model count is reached and every loaded model is in use.
    Busy,
}

/// Gives back a queue place when a request fails before it gets a lease.
struct QueueSlot<'a>(&'a Scheduler);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// When an idle model goes.
#[derive(Debug, PartialEq, Eq)]
enum Expiry {
    Now,
    Never,
    After(Duration),
}

fn expiry(keep_alive: KeepAlive, unload_when_idle: bool) -> Expiry {
    match keep_alive {
        _ if unload_when_idle => Expiry::Now,
        None => Expiry::Never,
        Some(d) if d.is_zero() => Expiry::Now,
        Some(d) => Expiry::After(d),
    }
}

/// The idle model to unload first: the least recently used.
fn pick_victim(idle: &[(Instant, PathBuf)]) -> Option<PathBuf> {
    idle.iter().min_by_key(|(t, _)| *t).map(|(_, p)| p.clone())
}

/// Weights plus a rough KV-cache estimate, for the memory check.
fn estimate_bytes(key: &LoadKey, parallel: u32) -> u64 {
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let weights = size(&key.path) + key.projector.as_deref().map_or(0, size);
    // With mmap the weights are page cache that the kernel can drop, but a
    // model that does not fit in memory pages itself to death; count them.
    // KV: ~64 KiB per token of context is generous for small models.
    let kv =
        u64::from(key.num_ctx) * u64::from(if key.embeddings { 1 } else { parallel }) * 64 * 1024;
    weights + kv.min(weights * 2)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rules() {
        assert_eq!(expiry(None, false), Expiry::Never);
        assert_eq!(expiry(Some(Duration::ZERO), false), Expiry::Now);
        assert_eq!(
            expiry(Some(Duration::from_secs(5)), false),
            Expiry::After(Duration::from_secs(5))
        );
        assert_eq!(expiry(None, true), Expiry::Now);
    }

    #[test]
    fn victim_is_least_recently_used() {
        let now = Instant::now();
        let idle = vec![
            (now, PathBuf::from("b")),
            (now - Duration::from_secs(5), PathBuf::from("a")),
        ];
        assert_eq!(pick_victim(&idle), Some(PathBuf::from("a")));
        assert_eq!(pick_victim(&[]), None);
    }

    #[test]
    fn estimate_counts_weights_and_context() {
        let key = LoadKey {
            path: PathBuf::from("/nonexistent"),
            num_ctx: 4096,
            num_batch: 512,
            num_thread: 0,
            use_mmap: true,
            embeddings: false,
            embed_seqs: 0,
            projector: None,
        };
        assert_eq!(estimate_bytes(&key, 1), 0, "missing file: nothing to count");
    }
}
