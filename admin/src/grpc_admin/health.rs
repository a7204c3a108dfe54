//! `grpc.health.v1.Health` (tonic-health) for the gRPC listener: one status for the
//! server as a whole (`""`) and one per service, all SERVING while the state store can
//! commit and NOT_SERVING while it cannot (the same condition as `/readyz`), and
//! NOT_SERVING once the admin begins to stop. The watcher wakes on the store's health
//! signal ([`crate::store::Store::health`]), not on a timer.

use std::sync::Arc;

use tonic_health::{ServingStatus, server::HealthReporter};

use crate::components::Components;

/// The services whose health is reported: the admin API, the worker protocol and the
/// server as a whole (`""`), which changes last, so a client watching it sees every
/// service in the state it reports.
pub const SERVICES: [&str; 3] =
    [proto::admin_pb::admin_service_server::SERVICE_NAME, proto::pb::plugin_control_service_server::SERVICE_NAME, ""];

pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Follows the store's health until the admin stops.
pub async fn follow(reporter: HealthReporter, state: Arc<Components>) {
    let mut healthy = state.store.health();
    loop {
        let serving = *healthy.borrow_and_update() && state.is_ready();
        set_all(&reporter, if serving { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
        tokio::select! {
            changed = healthy.changed() => if changed.is_err() { break },
            _ = state.shutdown.cancelled() => break,
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}
