//! The scheduler: which models are loaded, for how long, and who may use them.
//!
//! It keeps one [`Runner`] per loaded model and hands out [`Lease`]s. A lease
//! keeps the model loaded; when the last lease of a model drops, its
//! `keep_alive` timer starts. A background task unloads expired models. Before
//! loading, idle models are unloaded to respect `OLLAMA_MAX_LOADED_MODELS`
//! and the machine's available memory. Policy decisions (what to evict, does
//! it fit, when does it expire) are pure functions tested without a model.
//! It knows nothing of HTTP; the api module turns [`Error`] into statuses.

use std::mem::ManuallyDrop;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Not enough memory even after unloading idle models (Ollama's
    /// wording and units, `llm/server.go` and `format.HumanBytes2`).
    #[error(
        "model requires more system memory ({}) than is available ({})",
        human_bytes(*needed),
        human_bytes(*available)
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
    /// What llama.cpp planned for this load, counted against the budget.
    footprint: u64,
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
    /// The loaded model. Let go of before the release, so an unload that
    /// the release starts holds the last reference and frees the model's
    /// memory before it counts it as free.
    pub runner: ManuallyDrop<Arc<Runner>>,
    key: LoadKey,
    /// Time from asking for the model until it was ready: its load, or a
    /// wait for a slot, or next to nothing when it was loaded and free.
    /// Ollama's `load_duration` measures the same span (handler entry to
    /// scheduled runner, `server/routes.go` at v0.33), so it is never zero.
    pub load_duration: Duration,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // SAFETY: `runner` is dropped once, here, and not used after.
        unsafe { ManuallyDrop::drop(&mut self.runner) };
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
    /// The memory budget for loaded models and the process together
    /// (`HEARTH_MAX_MEMORY`); `None`: what the machine has available when
    /// the scheduler starts, less a margin (see [`default_budget`]).
    pub max_memory: Option<u64>,
}

/// The scheduler. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Scheduler {
    settings: Settings,
    /// Bytes loaded models may take: the budget less the process's own
    /// resident memory when it started.
    model_budget: u64,
    /// Footprints planned so far, by load settings (planning takes a
    /// dry load, so each is asked of llama.cpp once).
    footprints: Mutex<Vec<(LoadKey, u64)>>,
    cpu: Arc<CpuBudget>,
    loaded: Mutex<Vec<Loaded>>,
    /// Serialises loads: loading is CPU- and memory-bound, and two loads of
    /// the same model must not both happen.
    load_lock: tokio::sync::Mutex<()>,
    queued: AtomicUsize,
    /// Footprints of unloaded models whose memory is still being freed:
    /// they count against the budget until it is.
    freeing: Arc<AtomicU64>,
    changed: Arc<tokio::sync::Notify>,
}

impl Scheduler {
    /// A scheduler whose runners share `cpu`.
    pub fn new(settings: Settings, cpu: Arc<CpuBudget>) -> Arc<Scheduler> {
        let budget = settings.max_memory.unwrap_or_else(|| {
            default_budget(
                available_memory().unwrap_or(u64::MAX),
                total_memory().unwrap_or(0),
            )
        });
        let own = resident_memory().unwrap_or(0);
        let model_budget = budget.saturating_sub(own);
        log::info!(
            "memory budget {} ({} for models)",
            human_bytes(budget),
            human_bytes(model_budget)
        );
        let s = Arc::new(Scheduler {
            settings,
            model_budget,
            footprints: Mutex::new(Vec::new()),
            cpu,
            loaded: Mutex::new(Vec::new()),
            load_lock: tokio::sync::Mutex::new(()),
            queued: AtomicUsize::new(0),
            freeing: Arc::new(AtomicU64::new(0)),
            changed: Arc::new(tokio::sync::Notify::new()),
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
        let params = self.load_params(&key);
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
            let needed = if busy_other {
                0
            } else {
                self.unload_where(|l| l.key.path == key.path && l.leases == 0);
                self.footprint(&key, &params).await?
            };
            let full = !busy_other && self.make_room(needed)? == Room::Busy;
            if busy_other || full {
                drop(_load);
                let notified = self.changed.notified();
                tokio::select! {
                    () = notified => {},
                    () = tokio::time::sleep(Duration::from_millis(200)) => {},
                }
                continue;
            }
            let cpu = Arc::clone(&self.cpu);
            let path = key.path.clone();
            let load_params = params.clone();
            let runner = tokio::task::spawn_blocking(move || Runner::load(&path, load_params, cpu))
                .await
                .map_err(|_| Error::Interrupted)??;
            let runner = Arc::new(runner);
            log::info!(
                "loaded {} in {:?} ({} MiB planned, ctx {} x {}, kv {})",
                names.0,
                started.elapsed(),
                needed >> 20,
                runner.info().n_ctx,
                runner.info().n_parallel,
                self.settings.kv_type.name()
            );
            let now = Instant::now();
            self.state().push(Loaded {
                runner: Arc::clone(&runner),
                key: key.clone(),
                footprint: needed,
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
            return Ok(self.lease(runner, key, started.elapsed()));
        }
    }

    /// The engine's settings for a load key.
    fn load_params(&self, key: &LoadKey) -> LoadParams {
        LoadParams {
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
        }
    }

    /// What a load needs, planned by llama.cpp once per load key, on a
    /// blocking thread.
    async fn footprint(&self, key: &LoadKey, params: &LoadParams) -> Result<u64, Error> {
        let known = {
            let known = self.footprints.lock().unwrap_or_else(|e| e.into_inner());
            known.iter().find(|(k, _)| k == key).map(|(_, f)| *f)
        };
        if let Some(f) = known {
            return Ok(f);
        }
        let (path, p) = (key.path.clone(), params.clone());
        let planned = tokio::task::spawn_blocking(move || Runner::footprint(&path, &p))
            .await
            .map_err(|_| Error::Interrupted)??;
        log::debug!("{} planned: {planned:?}", key.path.display());
        let total = planned.total();
        let mut known = self.footprints.lock().unwrap_or_else(|e| e.into_inner());
        // A handful of keys per model; old ones go first past 64.
        if known.len() >= 64 {
            known.remove(0);
        }
        known.push((key.clone(), total));
        Ok(total)
    }

    fn lease(
        self: &Arc<Self>,
        runner: Arc<Runner>,
        key: LoadKey,
        load_duration: Duration,
    ) -> Lease {
        Lease {
            sched: Arc::clone(self),
            runner: ManuallyDrop::new(runner),
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

    /// Unloads idle models until one more, needing `needed` bytes, fits
    /// the model count, the memory budget and the memory the machine has
    /// free; `Busy` when it would fit once busy models finish (or unloaded
    /// ones are freed), and an error when it can never fit.
    fn make_room(&self, needed: u64) -> Result<Room, Error> {
        if needed > self.model_budget {
            return Err(Error::NoMemory {
                needed,
                available: self.model_budget,
            });
        }
        loop {
            let (count, loaded, idle) = {
                let st = self.state();
                let idle: Vec<(Instant, PathBuf)> = st
                    .iter()
                    .filter(|l| l.leases == 0)
                    .map(|l| (l.last_used, l.key.path.clone()))
                    .collect();
                let loaded = st
                    .iter()
                    .map(|l| l.footprint)
                    .fold(0u64, u64::saturating_add);
                (st.len(), loaded, idle)
            };
            let freeing = self.freeing.load(Ordering::SeqCst);
            let used = loaded.saturating_add(freeing);
            let in_budget = self.model_budget.saturating_sub(used);
            // Other processes count too: what the machine has free now.
            let free = available_memory().unwrap_or(u64::MAX);
            let available = in_budget.min(free);
            if count < self.settings.max_loaded && needed <= available {
                return Ok(Room::Ready);
            }
            let Some(victim) = pick_victim(&idle) else {
                if freeing > 0 {
                    log::debug!("waiting for unloaded models to free their memory");
                    return Ok(Room::Busy);
                }
                if count == 0 || needed > free.saturating_add(used) {
                    // Nothing to wait for: no model to unload would make room.
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
            let bytes = l.footprint;
            self.freeing.fetch_add(bytes, Ordering::SeqCst);
            let (freeing, changed) = (Arc::clone(&self.freeing), Arc::clone(&self.changed));
            // Dropping the last Arc joins the runner thread, which can take a
            // moment; do it off the caller's (possibly async) thread.
            std::thread::spawn(move || {
                drop(l);
                freeing.fetch_sub(bytes, Ordering::SeqCst);
                changed.notify_waiters();
            });
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
                size_bytes: l.footprint,
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

/// The default budget: what the machine has available at start, less a
/// margin of 1/16 of its memory (at least 64 MiB, at most 1 GiB) for the
/// kernel, page cache of the store's writes and whatever else the box
/// runs: at `MemAvailable` near zero Linux thrashes or calls the OOM
/// killer. On a 4 GiB board that keeps 256 MiB back.
fn default_budget(available: u64, total: u64) -> u64 {
    let margin = (total / 16).clamp(64 << 20, 1 << 30);
    available.saturating_sub(margin)
}

/// A byte count as Ollama's `format.HumanBytes2` writes it.
pub fn human_bytes(b: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match b {
        b if b >= GIB => format!("{:.1} GiB", b as f64 / GIB as f64),
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b if b >= KIB => format!("{:.1} KiB", b as f64 / KIB as f64),
        b => format!("{b} B"),
    }
}

/// A `/proc/meminfo` field, in bytes.
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `MemTotal`, in bytes.
fn total_memory() -> Option<u64> {
    meminfo("MemTotal:")
}

/// This process's resident memory (`VmRSS`), in bytes.
pub fn resident_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `MemAvailable`, in bytes.
fn available_memory() -> Option<u64> {
    meminfo("MemAvailable:")
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
    fn budget_keeps_a_margin_and_bytes_read_like_ollamas() {
        const GIB: u64 = 1 << 30;
        assert_eq!(default_budget(3 * GIB, 4 * GIB), 3 * GIB - GIB / 4);
        assert_eq!(default_budget(400 << 20, 512 << 20), 336 << 20);
        assert_eq!(default_budget(60 * GIB, 64 * GIB), 59 * GIB);
        assert_eq!(default_budget(10, 512 << 20), 0);
        assert_eq!(human_bytes(1_395_864_371), "1.3 GiB");
        assert_eq!(human_bytes(300 << 20), "300.0 MiB");
        assert_eq!(human_bytes(1023), "1023 B");
    }
}
