//! [`Readiness`]: whether the server takes work, and why not — one state that gRPC health and
//! `/readyz` both report, so they never disagree.

use std::sync::Arc;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::grpc;

/// The server's readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Everything is up: gRPC health SERVING, `/readyz` 200.
    Serving,
    /// Not taking work, with the reason (never patient data): gRPC health NOT_SERVING,
    /// `/readyz` 503.
    NotServing(String),
}

/// Sets gRPC health and what `/readyz` answers together; cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    /// The readiness, and whether the server is stopping.
    state: Arc<watch::Sender<(Ready, bool)>>,
    reporter: HealthReporter,
    /// The gRPC health names it sets.
    names: &'static [&'static str],
    /// Orders changes, so gRPC health ends as the state does.
    changing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.get())
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Readiness NOT_SERVING ("starting"), and the gRPC health service that reports it.
    pub async fn start() -> (Readiness, HealthServer<impl Health>) {
        Self::start_of(
            &grpc::HEALTH_NAMES,
            "starting: the model is warming up and the index is opening",
        )
        .await
    }

    /// Readiness NOT_SERVING for the reason `starting`, and the gRPC health service that reports
    /// it on `names` (the whole process "" and the services it serves).
    pub async fn start_of(
        names: &'static [&'static str],
        starting: &'static str,
    ) -> (Readiness, HealthServer<impl Health>) {
        let (reporter, health) = grpc::health_of(names).await;
        let readiness = Readiness {
            state: Arc::new(watch::Sender::new((
                Ready::NotServing(starting.to_string()),
                false,
            ))),
            reporter,
            names,
            changing: Arc::default(),
        };
        (readiness, health)
    }

    /// The readiness now.
    pub fn get(&self) -> Ready {
        self.state.borrow().0.clone()
    }

    /// Reports `ready` over gRPC health and `/readyz`; ignored once the server is stopping.
    pub async fn set(&self, ready: Ready) {
        let _changing = self.changing.lock().await;
        if self.state.borrow().1 {
            return;
        }
        let status = match ready {
            Ready::Serving => ServingStatus::Serving,
            Ready::NotServing(_) => ServingStatus::NotServing,
        };
        self.state.send_replace((ready, false));
        grpc::set_health_of(&self.reporter, self.names, status).await;
    }

    /// The server is stopping: NOT_SERVING ("stopping") from now on, whatever is set after.
    pub async fn stopping(&self) {
        let _changing = self.changing.lock().await;
        self.state.send_replace((
            Ready::NotServing("stopping: answering what is in flight".to_string()),
            true,
        ));
        grpc::set_health_of(&self.reporter, self.names, ServingStatus::NotServing).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_wins_over_later_changes() {
        let (readiness, _health) = Readiness::start().await;
        assert!(
            matches!(readiness.get(), Ready::NotServing(reason) if reason.starts_with("starting"))
        );
        readiness.set(Ready::Serving).await;
        assert_eq!(readiness.get(), Ready::Serving);
        readiness.stopping().await;
        readiness.set(Ready::Serving).await;
        assert!(
            matches!(readiness.get(), Ready::NotServing(reason) if reason.starts_with("stopping"))
        );
    }
}
