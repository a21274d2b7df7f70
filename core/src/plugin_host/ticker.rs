//! The epoch ticker: wasmtime counts plugin deadlines in epochs, and this thread advances the
//! engine's epoch every tick, but only while a plugin call may be running. Every call arms
//! its deadline through [`Ticker::armed`], which keeps the ticks coming for longer than any
//! call can last; once that has passed with no new call, the thread parks, so an idle berthd
//! is not woken a hundred times a second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use wasmtime::{Engine, EngineWeak};

/// A handle on the ticker thread; cheap to clone. The thread ends once the engine or every
/// handle is gone.
#[derive(Clone)]
pub(crate) struct Ticker(Arc<Shared>);

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker")
            .field("ticks", &self.0.ticks.load(Ordering::Relaxed))
            .finish()
    }
}

struct Shared {
    tick: Duration,
    /// How long the ticks go on after a deadline is armed.
    keep_ticking: Duration,
    started: Instant,
    /// Until when (milliseconds since `started`) the thread must keep ticking.
    busy_until_ms: AtomicU64,
    /// Whether the thread is parked (or about to be): an arming call must unpark it.
    asleep: AtomicBool,
    /// Epochs advanced so far.
    ticks: AtomicU64,
    thread: OnceLock<Thread>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn idle(&self) -> bool {
        self.now_ms() >= self.busy_until_ms.load(Ordering::SeqCst)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A parked thread would otherwise never notice it is no longer needed.
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

impl Ticker {
    /// Starts the thread advancing `engine`'s epoch every `tick` for `keep_ticking` after
    /// each [`Ticker::armed`]. Starts parked.
    pub(crate) fn start(
        engine: &Engine,
        tick: Duration,
        keep_ticking: Duration,
    ) -> std::io::Result<Ticker> {
        Ticker::spawn(engine, tick, keep_ticking).map(|(ticker, _detached)| ticker)
    }

    fn spawn(
        engine: &Engine,
        tick: Duration,
        keep_ticking: Duration,
    ) -> std::io::Result<(Ticker, std::thread::JoinHandle<()>)> {
        let shared = Arc::new(Shared {
            tick,
            keep_ticking,
            started: Instant::now(),
            busy_until_ms: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            thread: OnceLock::new(),
        });
        let weak_shared = Arc::downgrade(&shared);
        let weak_engine = engine.weak();
        let handle = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || run(&weak_engine, &weak_shared))?;
        let _ = shared.thread.set(handle.thread().clone());
        Ok((Ticker(shared), handle))
    }

    /// A deadline was just armed: the epoch must advance until the call it guards has
    /// certainly ended (trapped at its deadline if nothing else).
    pub(crate) fn armed(&self) {
        let shared = &self.0;
        let until = shared.now_ms() + shared.keep_ticking.as_millis() as u64;
        // Calls come far more often than ticks: while the ticks are already promised for all
        // but one tick as long, the word the ticker thread reads is left alone instead of
        // being written (its cache line taken from the other core) on every call. The
        // slack is covered: `keep_ticking` outlasts a call by more than a tick.
        let slack = shared.tick.as_millis() as u64;
        if shared.busy_until_ms.load(Ordering::Relaxed) + slack < until {
            shared.busy_until_ms.fetch_max(until, Ordering::SeqCst);
        }
        if shared.asleep.load(Ordering::SeqCst)
            && let Some(thread) = shared.thread.get()
        {
            thread.unpark();
        }
    }

    /// Epochs advanced so far.
    #[cfg(test)]
    pub(crate) fn ticks(&self) -> u64 {
        self.0.ticks.load(Ordering::SeqCst)
    }
}

fn run(engine: &EngineWeak, shared: &Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.idle() {
            // Published before the last look, so an arming call either sees it and unparks
            // this thread, or moved `busy_until_ms` in time for that look to see it.
            s.asleep.store(true, Ordering::SeqCst);
            let idle = s.idle();
            drop(s);
            if idle {
                std::thread::park();
            }
            let Some(s) = shared.upgrade() else { return };
            s.asleep.store(false, Ordering::SeqCst);
            continue;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        engine.increment_epoch();
        drop(engine);
        s.ticks.fetch_add(1, Ordering::SeqCst);
        let tick = s.tick;
        drop(s);
        std::thread::sleep(tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_advances_only_for_a_while_after_a_deadline_is_armed() {
        let engine = Engine::default();
        let tick = Duration::from_millis(5);
        let ticker = Ticker::start(&engine, tick, Duration::from_millis(100)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ticker.ticks(), 0, "no call was armed: no tick");

        ticker.armed();
        std::thread::sleep(Duration::from_millis(60));
        let during = ticker.ticks();
        assert!(during >= 3, "ticks while a call may run: {during}");

        // 100 ms after arming the ticks stop.
        std::thread::sleep(Duration::from_millis(150));
        let after = ticker.ticks();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ticker.ticks(), after, "no ticks once idle");
        assert!(after <= 100 / 5 + 3, "stopped on time: {after} ticks");

        // And they come back with the next call.
        ticker.armed();
        std::thread::sleep(Duration::from_millis(50));
        assert!(ticker.ticks() > after);
    }

    #[test]
    fn the_thread_ends_with_its_last_handle() {
        let engine = Engine::default();
        let (ticker, thread) =
            Ticker::spawn(&engine, Duration::from_millis(5), Duration::ZERO).unwrap();
        assert_eq!(thread.thread().name(), Some("wasm-epoch"));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!thread.is_finished(), "parked, not gone");
        drop(ticker);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(thread.is_finished(), "the parked thread was woken to end");
    }
}
