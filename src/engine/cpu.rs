//! The process-wide CPU budget shared by every loaded model.
//!
//! ggml's worker threads busy-wait between graph nodes, so two contexts that
//! each decode with all cores at the same time make every thread fight for a
//! core and throughput collapses. Every runner asks this budget for threads
//! before each `decode` and hands them back afterwards, so the sum of threads
//! computing never exceeds `cores`. It knows nothing about models or llama.cpp;
//! the runner applies the granted count to its context.
//!
//! Two policies exist because both were measured (see `bench.rs`):
//! - [`Policy::Split`] (default): each busy runner gets `cores / busy_runners`
//!   threads (at least one) and models decode side by side.
//! - [`Policy::FairLock`]: one decode at a time with all cores, granted in
//!   FIFO order so models alternate.
//!
//! Idle runners hold nothing: threads are only held for the duration of one
//! decode. A runner computes on a persistent ggml pool (see `sys/`), whose
//! workers poll briefly after a decode; the runner pauses that pool when it
//! goes idle, and after every decode while another runner is busy, so
//! nothing spins while a model waits for requests or on another's cores.

use std::sync::{Condvar, Mutex, MutexGuard};

/// How the budget shares cores between runners that are busy at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Give each busy runner an equal share of the cores; decode in parallel.
    Split,
    /// Serialise decodes; each one gets every core, FIFO between runners.
    FairLock,
}

#[derive(Debug)]
struct State {
    free: usize,
    /// Runners that currently have work (registered via [`CpuBudget::busy`]).
    busy: usize,
    next_ticket: u64,
    serving: u64,
}

/// Shared thread budget; cheap to share through an `Arc`.
#[derive(Debug)]
pub struct CpuBudget {
    cores: usize,
    policy: Policy,
    state: Mutex<State>,
    cond: Condvar,
}

/// Threads granted for one decode; returned to the budget on drop.
#[derive(Debug)]
pub struct Grant<'a> {
    budget: &'a CpuBudget,
    /// Threads taken from the pool (all cores for the fair lock).
    held: usize,
    /// Threads the holder computes with.
    threads: usize,
}

impl Grant<'_> {
    /// How many threads the holder may compute with.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        let mut st = self.budget.lock();
        st.free += self.held;
        if self.budget.policy == Policy::FairLock {
            st.serving += 1;
        }
        drop(st);
        self.budget.cond.notify_all();
    }
}

/// Marks a runner as having work while alive (see [`CpuBudget::busy`]).
#[derive(Debug)]
pub struct Busy<'a> {
    budget: &'a CpuBudget,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut st = self.budget.lock();
        st.busy = st.busy.saturating_sub(1);
        drop(st);
        self.budget.cond.notify_all();
    }
}

impl CpuBudget {
    /// A budget of `cores` threads with the default (measured best) policy.
    pub fn new(cores: usize) -> CpuBudget {
        CpuBudget::with_policy(cores, Policy::Split)
    }

    pub fn with_policy(cores: usize, policy: Policy) -> CpuBudget {
        let cores = cores.max(1);
        CpuBudget {
            cores,
            policy,
            state: Mutex::new(State {
                free: cores,
                busy: 0,
                next_ticket: 0,
                serving: 0,
            }),
            cond: Condvar::new(),
        }
    }

    /// Total cores this budget hands out.
    pub fn cores(&self) -> usize {
        self.cores
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another runner panicked while holding
        // it; the counters are still consistent (updated in one statement).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a runner as busy for the lifetime of the returned guard, so
    /// the split policy knows how many runners share the cores.
    pub fn busy(&self) -> Busy<'_> {
        self.lock().busy += 1;
        self.cond.notify_all();
        Busy { budget: self }
    }

    /// Whether runners other than the caller (itself registered as busy)
    /// have work, so cores it leaves idle between decodes are someone else's.
    pub fn others_busy(&self) -> bool {
        self.lock().busy > 1
    }

    /// Blocks until threads are available and returns a grant of at most
    /// `want` threads (at least one).
    pub fn acquire(&self, want: usize) -> Grant<'_> {
        let want = want.clamp(1, self.cores);
        let mut st = self.lock();
        match self.policy {
            Policy::Split => loop {
                let share = (self.cores / st.busy.max(1)).max(1);
                if st.free > 0 {
                    let threads = want.min(share).min(st.free);
                    st.free -= threads;
                    return Grant {
                        budget: self,
                        held: threads,
                        threads,
                    };
                }
                st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
            },
            Policy::FairLock => {
                let ticket = st.next_ticket;
                st.next_ticket += 1;
                while st.serving != ticket || st.free < self.cores {
                    st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                // The whole budget is held until the grant drops, even if
                // fewer threads compute, so no other decode overlaps.
                st.free = 0;
                Grant {
                    budget: self,
                    held: self.cores,
                    threads: want,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn split_never_exceeds_cores() {
        let b = Arc::new(CpuBudget::with_policy(2, Policy::Split));
        let _x = b.busy();
        let _y = b.busy();
        let g1 = b.acquire(2);
        assert_eq!(g1.threads(), 1);
        let g2 = b.acquire(2);
        assert_eq!(g2.threads(), 1);
        drop(g1);
        drop(g2);
        drop(_y);
        assert_eq!(b.acquire(2).threads(), 2);
    }

    #[test]
    fn fair_lock_serialises() {
        let b = Arc::new(CpuBudget::with_policy(2, Policy::FairLock));
        let g = b.acquire(2);
        assert_eq!(g.threads(), 2);
        let b2 = Arc::clone(&b);
        let t = std::thread::spawn(move || b2.acquire(2).threads());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished());
        drop(g);
        assert_eq!(t.join().ok(), Some(2));
    }
}
