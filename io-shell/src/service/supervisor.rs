//! Background tasks run by name, watched, and restarted when they matter.
//!
//! A background task that dies silently is a daemon that slowly stops
//! working (no more persistence, no more health checks). Every background
//! task runs under the supervisor: its state is visible in `musicfs
//! status`, a failure or panic is logged, and a *critical* task is restarted
//! with a growing pause.

use crate::errors::error_chain;
use crate::origin::BoxFuture;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// What a supervised task is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Running.
    Running,
    /// Failed (returned an error or panicked); restarting after a pause.
    Restarting {
        /// The failure.
        error: String,
    },
    /// Failed and not critical: left stopped.
    Failed {
        /// The failure.
        error: String,
    },
    /// Ended by itself.
    Finished,
    /// Stopped by the supervisor (shutdown).
    Stopped,
}

/// One task as `musicfs status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    /// Its name.
    pub name: String,
    /// Whether it is restarted when it fails.
    pub critical: bool,
    /// Its state.
    pub state: TaskState,
    /// How often it was restarted.
    pub restarts: u32,
}

/// Restart pauses.
#[derive(Clone, Copy, Debug)]
pub struct RestartPolicy {
    /// First pause.
    pub base: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// Why a supervised task ended with an error. `musicfs status` and the log
/// show it with its causes.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A loop meant to run as long as the daemon returned.
    #[error("{0} ended")]
    Ended(&'static str),
    /// The task failed.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl TaskError {
    /// The task failed with `e`.
    pub fn failed(e: impl std::error::Error + Send + Sync + 'static) -> TaskError {
        TaskError::Failed(Box::new(e))
    }
}

/// A task body: a fresh future per (re)start.
pub type TaskFactory = Arc<dyn Fn() -> BoxFuture<'static, Result<(), TaskError>> + Send + Sync>;

struct Task {
    status: TaskStatus,
    monitor: Option<AbortHandle>,
    current: Option<AbortHandle>,
}

/// Runs and watches background tasks.
pub struct Supervisor {
    rt: Handle,
    policy: RestartPolicy,
    tasks: Arc<Mutex<BTreeMap<String, Task>>>,
}

impl Supervisor {
    /// A supervisor spawning on `rt`.
    pub fn new(rt: Handle, policy: RestartPolicy) -> Supervisor {
        Supervisor {
            rt,
            policy,
            tasks: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Runs `factory()` as task `name`. A critical task that fails or
    /// panics is started again after a pause that doubles up to the policy's
    /// maximum; a non-critical one is left failed.
    pub fn spawn(&self, name: &str, critical: bool, factory: TaskFactory) {
        let tasks = Arc::clone(&self.tasks);
        let (rt, policy, name_owned) = (self.rt.clone(), self.policy, name.to_owned());
        tasks.lock().insert(
            name.to_owned(),
            Task {
                status: TaskStatus {
                    name: name.to_owned(),
                    critical,
                    state: TaskState::Running,
                    restarts: 0,
                },
                monitor: None,
                current: None,
            },
        );
        let monitor = self.rt.spawn(async move {
            let mut pause = policy.base;
            loop {
                let handle = rt.spawn(factory());
                if let Some(t) = tasks.lock().get_mut(&name_owned) {
                    t.current = Some(handle.abort_handle());
                    t.status.state = TaskState::Running;
                }
                let error = match handle.await {
                    Ok(Ok(())) => {
                        set_state(&tasks, &name_owned, TaskState::Finished);
                        tracing::debug!(task = %name_owned, "background task finished");
                        return;
                    }
                    Ok(Err(e)) => error_chain(&e),
                    Err(e) if e.is_cancelled() => return,
                    Err(e) => format!("panicked: {}", panic_message(e)),
                };
                if !critical {
                    tracing::error!(task = %name_owned, %error, "background task failed");
                    set_state(&tasks, &name_owned, TaskState::Failed { error });
                    return;
                }
                tracing::error!(task = %name_owned, %error, restart_in = ?pause, "critical task failed; restarting");
                if let Some(t) = tasks.lock().get_mut(&name_owned) {
                    t.status.state = TaskState::Restarting { error };
                    t.status.restarts += 1;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(policy.max);
            }
        });
        if let Some(t) = self.tasks.lock().get_mut(name) {
            t.monitor = Some(monitor.abort_handle());
        }
    }

    /// The state of one task.
    pub fn status(&self, name: &str) -> Option<TaskState> {
        self.tasks.lock().get(name).map(|t| t.status.state.clone())
    }

    /// Every task, by name.
    pub fn statuses(&self) -> Vec<TaskStatus> {
        self.tasks
            .lock()
            .values()
            .map(|t| t.status.clone())
            .collect()
    }

    /// Stops every task (at shutdown).
    pub fn stop_all(&self) {
        for t in self.tasks.lock().values_mut() {
            if let Some(m) = t.monitor.take() {
                m.abort();
            }
            if let Some(c) = t.current.take() {
                c.abort();
            }
            if matches!(
                t.status.state,
                TaskState::Running | TaskState::Restarting { .. }
            ) {
                t.status.state = TaskState::Stopped;
            }
        }
    }
}

fn set_state(tasks: &Mutex<BTreeMap<String, Task>>, name: &str, state: TaskState) {
    if let Some(t) = tasks.lock().get_mut(name) {
        t.status.state = state;
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-text panic".into()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    fn fast() -> RestartPolicy {
        RestartPolicy {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        }
    }

    fn wait(mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..500 {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn test_task_supervisor_detects_panic() {
        let rt = runtime();
        let sup = Supervisor::new(rt.handle().clone(), fast());
        sup.spawn(
            "doomed",
            false,
            Arc::new(|| Box::pin(async { panic!("deliberate task panic") })),
        );
        assert!(wait(|| matches!(
            sup.status("doomed"),
            Some(TaskState::Failed { .. })
        )));
        let Some(TaskState::Failed { error }) = sup.status("doomed") else {
            unreachable!()
        };
        assert!(error.contains("deliberate task panic"), "{error}");
    }

    #[test]
    fn test_task_supervisor_restarts_critical_task() {
        let rt = runtime();
        let sup = Supervisor::new(rt.handle().clone(), fast());
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        sup.spawn(
            "health_monitor",
            true,
            Arc::new(move || {
                let c = Arc::clone(&c);
                Box::pin(async move {
                    if c.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("first run fails");
                    }
                    loop {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                })
            }),
        );
        assert!(wait(|| calls.load(Ordering::SeqCst) == 2
            && sup.status("health_monitor") == Some(TaskState::Running)));
        assert_eq!(sup.statuses()[0].restarts, 1);
        sup.stop_all();
        assert_eq!(sup.status("health_monitor"), Some(TaskState::Stopped));
    }

    #[test]
    fn errors_are_restarted_with_growing_pauses_and_finishing_is_final() {
        let rt = runtime();
        let sup = Supervisor::new(rt.handle().clone(), fast());
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        sup.spawn(
            "flaky",
            true,
            Arc::new(move || {
                let c = Arc::clone(&c);
                Box::pin(async move {
                    match c.fetch_add(1, Ordering::SeqCst) {
                        0..=2 => Err(TaskError::failed(std::io::Error::other("not yet"))),
                        _ => Ok(()),
                    }
                })
            }),
        );
        assert!(wait(|| sup.status("flaky") == Some(TaskState::Finished)));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(sup.statuses()[0].restarts, 3);
    }
}
