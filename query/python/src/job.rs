//! Long calls: the work runs on a thread of its own while Python's thread draws its progress and
//! watches for Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use pyo3::call::PyCallArgs;
use pyo3::prelude::*;

use crate::FamiliarBug;

/// What a stop asked for from Python (Ctrl-C, or an exception raised by the progress callback)
/// does to the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnStop {
    /// Set the cancel flag and wait for the work to stop (it checks the flag between steps and
    /// cleans up after itself); then raise.
    Cancel,
    /// Raise at once and leave the work to finish on its thread, its result dropped: only for
    /// work that writes nothing (a query), so nothing can be left half-done.
    Abandon,
}

/// Runs `work` on its own thread. Every event it reports is handed to `on_event` on this thread
/// (Python's, holding the GIL) before the work goes on, so a stop asked for by the callback takes
/// effect at once; between events, Ctrl-C is checked every 100 ms. A stop sets `cancel` and,
/// as `on_stop` says, waits for the work or leaves it; the exception is then raised.
pub(crate) fn run_job<T, E>(
    py: Python<'_>,
    cancel: &Arc<AtomicBool>,
    on_stop: OnStop,
    on_event: Option<&Py<PyAny>>,
    work: impl FnOnce(&(dyn Fn(E) + Sync)) -> T + Send + 'static,
) -> PyResult<T>
where
    T: Send + 'static,
    E: for<'py> PyCallArgs<'py> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<E>();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<T>();
    let worker = std::thread::Builder::new()
        .name("familiar-job".into())
        .spawn(move || {
            let ack = Mutex::new(ack_rx);
            let tx = Mutex::new(tx);
            let result = work(&|e| {
                let sent = tx.lock().map(|t| t.send(e).is_ok()).unwrap_or(false);
                if sent {
                    if let Ok(a) = ack.lock() {
                        let _ = a.recv();
                    }
                }
            });
            drop(tx);
            let _ = done_tx.send(result);
        })
        .map_err(|e| FamiliarBug::new_err(format!("cannot start a worker thread: {e}")))?;
    let mut raised: Option<PyErr> = None;
    let rx = Mutex::new(rx);
    loop {
        let next = py.detach(|| match rx.lock() {
            Ok(r) => r.recv_timeout(Duration::from_millis(100)),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        });
        match next {
            Ok(ev) => {
                if raised.is_none() {
                    if let Some(cb) = on_event {
                        if let Err(e) = cb.call1(py, ev) {
                            raised = Some(e);
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                }
                let _ = ack_tx.send(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if raised.is_none() {
            if let Err(e) = py.check_signals() {
                raised = Some(e);
                cancel.store(true, Ordering::Relaxed);
            }
        }
        if on_stop == OnStop::Abandon {
            if let Some(e) = raised.take() {
                // With both channels closed the worker never waits on us again.
                drop(rx);
                drop(ack_tx);
                return Err(e);
            }
        }
    }
    let done_rx = Mutex::new(done_rx);
    let result = py.detach(|| {
        let r = done_rx
            .lock()
            .map_err(|_| mpsc::RecvError)
            .and_then(|r| r.recv());
        let _ = worker.join();
        r
    });
    if let Some(e) = raised {
        return Err(e);
    }
    result.map_err(|_| FamiliarBug::new_err("the worker thread panicked"))
}

/// A progress event for the Python side's bars: (kind, stage, n) — `("start", stage, total)`,
/// `("step", stage, done)` (more items done), `("finish", stage, 0)`.
pub(crate) type Step = (&'static str, &'static str, u64);
