//! A counting semaphore that serves its waiters round-robin by lane (a source address), and
//! whose waiters give up after a deadline.
//!
//! A FIFO semaphore lets one busy source push everyone else to the back of the queue: 600
//! requests from a few addresses put a correct sign-in from elsewhere behind all of them. Here a
//! freed permit goes to the next *lane* in turn, so a caller waits for at most one run per other
//! active lane, however many requests each lane has queued.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::oneshot;

/// Round-robin permits by lane `L`.
pub struct FairPool<L> {
    state: Arc<Mutex<State<L>>>,
    wait: Duration,
}

impl<L> Clone for FairPool<L> {
    fn clone(&self) -> Self {
        Self { state: Arc::clone(&self.state), wait: self.wait }
    }
}

struct State<L> {
    free: usize,
    /// Waiters of each lane, oldest first. A lane is here exactly when it is in `turns`.
    lanes: HashMap<L, VecDeque<oneshot::Sender<()>>>,
    /// Lanes with waiters, in the order they are served.
    turns: VecDeque<L>,
}

/// The right to run one job; handed to the next waiter when dropped.
pub struct Permit<L: Eq + Hash + Clone> {
    state: Arc<Mutex<State<L>>>,
}

/// No permit came free within the pool's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

fn lock<L>(m: &Mutex<State<L>>) -> MutexGuard<'_, State<L>> {
    // The state stays consistent between statements, so a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<L: Eq + Hash + Clone> FairPool<L> {
    /// `permits` jobs at once; a waiter gives up after `wait`.
    pub fn new(permits: usize, wait: Duration) -> Self {
        let state = State { free: permits, lanes: HashMap::new(), turns: VecDeque::new() };
        Self { state: Arc::new(Mutex::new(state)), wait }
    }

    /// Waiters currently queued (all lanes).
    pub fn waiting(&self) -> usize {
        lock(&self.state).lanes.values().map(|q| q.iter().filter(|tx| !tx.is_closed()).count()).sum()
    }

    /// Waits for a permit in `lane`'s turn, at most the pool's wait.
    pub async fn acquire(&self, lane: L) -> Result<Permit<L>, TimedOut> {
        let rx = {
            let mut st = lock(&self.state);
            // Free permits exist only while nobody waits (a release hands its permit over first).
            if st.free > 0 {
                st.free -= 1;
                return Ok(self.permit());
            }
            let (tx, rx) = oneshot::channel();
            match st.lanes.get_mut(&lane) {
                Some(queue) => queue.push_back(tx),
                None => {
                    st.lanes.insert(lane.clone(), VecDeque::from([tx]));
                    st.turns.push_back(lane.clone());
                }
            }
            rx
        };
        let mut waiting = Waiting { rx, state: &self.state };
        match tokio::time::timeout(self.wait, &mut waiting.rx).await {
            // Taken: the guard finds nothing left to hand on.
            Ok(Ok(())) => Ok(self.permit()),
            Ok(Err(_)) => Err(TimedOut),
            Err(_) => {
                // A permit sent just as the deadline passed is ours: closing first means no
                // later send can succeed, so nothing is lost between the two.
                if waiting.take_late_permit() {
                    return Ok(self.permit());
                }
                let mut st = lock(&self.state);
                if let Some(queue) = st.lanes.get_mut(&lane) {
                    queue.retain(|tx| !tx.is_closed());
                    if queue.is_empty() {
                        st.lanes.remove(&lane);
                        st.turns.retain(|l| l != &lane);
                    }
                }
                Err(TimedOut)
            }
        }
    }

    fn permit(&self) -> Permit<L> {
        Permit { state: Arc::clone(&self.state) }
    }
}

/// A caller's place in line. A caller can stop waiting at any point (its request is cancelled when
/// its client goes away), even after a release has handed it the permit and before it has taken
/// it: dropped then, this hands the permit on instead of losing it for good, which would shrink the
/// pool by one permit for the rest of the process.
struct Waiting<'a, L: Eq + Hash + Clone> {
    rx: oneshot::Receiver<()>,
    state: &'a Arc<Mutex<State<L>>>,
}

impl<L: Eq + Hash + Clone> Waiting<'_, L> {
    /// Stops the line from handing this caller anything more; true when a permit had been handed
    /// over already (it is the caller's now).
    fn take_late_permit(&mut self) -> bool {
        self.rx.close();
        self.rx.try_recv().is_ok()
    }
}

impl<L: Eq + Hash + Clone> Drop for Waiting<'_, L> {
    fn drop(&mut self) {
        if self.take_late_permit() {
            drop(Permit { state: Arc::clone(self.state) });
        }
    }
}

impl<L: Eq + Hash + Clone> Drop for Permit<L> {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        while let Some(lane) = st.turns.pop_front() {
            let Some(mut queue) = st.lanes.remove(&lane) else { continue };
            let mut handed = false;
            while let Some(tx) = queue.pop_front() {
                if tx.send(()).is_ok() {
                    handed = true;
                    break;
                }
            }
            if !queue.is_empty() {
                // Served (or emptied of the departed): to the back of the line.
                st.lanes.insert(lane.clone(), queue);
                st.turns.push_back(lane);
            }
            if handed {
                return;
            }
        }
        st.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_quiet_lane_is_served_before_a_busy_lanes_backlog() {
        let pool = FairPool::new(1, Duration::from_secs(60));
        let held = pool.acquire("busy").await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, lane) in ["busy", "busy", "busy", "busy", "quiet"].into_iter().enumerate() {
            let (task_pool, order) = (pool.clone(), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _p = task_pool.acquire(lane).await.unwrap();
                order.lock().unwrap().push(format!("{lane}{i}"));
            }));
            // Queue them in this order.
            while pool.waiting() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        // FIFO would put quiet4 last; round-robin serves it second.
        assert_eq!(*order.lock().unwrap(), ["busy0", "quiet4", "busy1", "busy2", "busy3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_the_wait_and_its_place_is_not_leaked() {
        let pool = FairPool::new(1, Duration::from_secs(2));
        let held = pool.acquire(1).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(pool.acquire(2).await.err(), Some(TimedOut));
        assert!((Duration::from_secs(2)..Duration::from_secs(3)).contains(&started.elapsed()));
        assert_eq!(pool.waiting(), 0);
        drop(held);
        // The permit came back: taken at once, and only one exists.
        let again = pool.acquire(3).await.unwrap();
        assert_eq!(pool.acquire(4).await.err(), Some(TimedOut));
        drop(again);
        assert!(pool.acquire(5).await.is_ok());
    }

    /// A request is cancelled when its client goes away, possibly just after a release handed its
    /// waiter the permit. That permit used to be lost with it: the pool shrank for good.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_cancelled_after_being_handed_the_permit_passes_it_on() {
        let pool = FairPool::new(1, Duration::from_secs(2));
        let held = pool.acquire(1).await.unwrap();
        let mut cancelled = Box::pin(pool.acquire(2));
        assert!(futures::poll!(&mut cancelled).is_pending(), "queued behind the held permit");
        drop(held); // hands the permit to the queued waiter...
        drop(cancelled); // ...which goes away before taking it
        let next = pool.acquire(3).await;
        assert!(next.is_ok(), "the permit was passed on, not lost");
        assert_eq!(pool.acquire(4).await.err(), Some(TimedOut), "and there is still only one");
    }

    #[tokio::test]
    async fn permits_are_never_exceeded_under_contention() {
        let pool = FairPool::new(3, Duration::from_secs(60));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (pool, running, peak) = (pool.clone(), Arc::clone(&running), Arc::clone(&peak));
                tokio::spawn(async move {
                    let _p = pool.acquire(i % 7).await.unwrap();
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
