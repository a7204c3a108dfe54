//! The leader lease: one row in PostgreSQL (`plughost_lease`: holder, epoch, expiry, the
//! holder's advertised addresses) that admins sharing a database compete for.
//!
//! - **Taking it.** An admin takes the lease only when it has expired (by the database's
//!   clock, so the admins' clocks never have to agree), and taking it bumps the epoch. A
//!   holder that restarts is a new holder and waits for its old lease to run out too.
//! - **Keeping it.** The holder renews it well inside its time to live; a renewal only
//!   succeeds while the epoch is still the holder's.
//! - **The holder's own deadline.** The holder counts its lease from the moment it *sent*
//!   the last renewal that succeeded, on its own monotonic clock: the database set the
//!   expiry later than that, so the holder's idea of the end is never later than the
//!   database's. It stops dispatching before that deadline ([`Lease::must_stop_by`]).
//! - **Fencing** is the store's: every batch checks, under a share lock on this row, that
//!   the epoch is still the writer's (`store::postgres`). This module only moves the epoch.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

/// Who holds the lease, as the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub holder: String,
    pub epoch: i64,
    /// The lease has not expired yet (by the database's clock).
    pub live: bool,
    /// The holder's advertised HTTP address (what operators and standbys point to).
    pub http_addr: String,
    /// The holder's advertised gRPC address (where workers go).
    pub grpc_addr: String,
}

/// The lease as this admin holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub epoch: i64,
    /// When the request that last took or renewed it was sent (this process's clock).
    pub since: Instant,
}

/// A lease operation failed: the database could not be reached or refused the query.
#[derive(Debug, thiserror::Error)]
#[error("leader lease: {what}: {source}")]
pub struct LeaseError {
    what: &'static str,
    #[source]
    source: tokio_postgres::Error,
}

/// One admin's side of the lease.
pub struct Lease {
    holder: String,
    ttl: Duration,
    http_addr: String,
    grpc_addr: String,
}

impl Lease {
    /// `holder` must be unique to this process (a restart is a new holder); the addresses
    /// are advertised to standbys and workers while this admin leads.
    pub fn new(holder: String, ttl: Duration, http_addr: String, grpc_addr: String) -> Lease {
        Lease { holder, ttl, http_addr, grpc_addr }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn http_addr(&self) -> &str {
        &self.http_addr
    }

    pub fn grpc_addr(&self) -> &str {
        &self.grpc_addr
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the holder renews: three times per time to live, so two renewals in a
    /// row may fail before the lease is at risk.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// When the holder must have stopped dispatching: a fifth of the time to live before
    /// its lease can expire.
    pub fn must_stop_by(&self, held: &Held) -> Instant {
        held.since + self.ttl - self.ttl / 5
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Takes the lease if nobody holds it or it has expired; `None` while another holder's
    /// lease is live.
    pub async fn try_acquire(&self, client: &Client) -> Result<Option<Held>, LeaseError> {
        let since = Instant::now();
        let row = client
            .query_opt(
                "INSERT INTO plughost_lease (id, holder, epoch, expires_at, http_addr, grpc_addr) \
                 VALUES (1, $1, 1, clock_timestamp() + $2::float8 * interval '1 millisecond', $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, epoch = plughost_lease.epoch + 1, \
                 expires_at = EXCLUDED.expires_at, http_addr = EXCLUDED.http_addr, grpc_addr = EXCLUDED.grpc_addr \
                 WHERE plughost_lease.expires_at < clock_timestamp() \
                 RETURNING epoch",
                &[&self.holder, &(self.ttl_ms() as f64), &self.http_addr, &self.grpc_addr],
            )
            .await
            .map_err(|source| LeaseError { what: "cannot take the lease", source })?;
        Ok(row.map(|row| Held { epoch: row.get(0), since }))
    }

    /// Renews the lease while its epoch is still `held`'s: `Some` with the new start,
    /// `None` when another admin has taken it.
    pub async fn renew(&self, client: &Client, held: &Held) -> Result<Option<Held>, LeaseError> {
        let since = Instant::now();
        let n = client
            .execute(
                "UPDATE plughost_lease SET expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond' \
                 WHERE id = 1 AND epoch = $1 AND holder = $2",
                &[&held.epoch, &self.holder, &(self.ttl_ms() as f64)],
            )
            .await
            .map_err(|source| LeaseError { what: "cannot renew the lease", source })?;
        Ok((n == 1).then_some(Held { epoch: held.epoch, since }))
    }

    /// Gives the lease up at once (a clean stop), so a standby need not wait for it to
    /// expire. Only this holder's epoch is touched.
    pub async fn release(&self, client: &Client, held: &Held) -> Result<(), LeaseError> {
        client
            .execute(
                "UPDATE plughost_lease SET expires_at = clock_timestamp() - interval '1 millisecond' \
                 WHERE id = 1 AND epoch = $1 AND holder = $2",
                &[&held.epoch, &self.holder],
            )
            .await
            .map_err(|source| LeaseError { what: "cannot release the lease", source })?;
        Ok(())
    }
}

/// The lease as it stands, if anyone ever took it.
pub async fn current(client: &Client) -> Result<Option<LeaseState>, LeaseError> {
    let row = client
        .query_opt(
            "SELECT holder, epoch, expires_at > clock_timestamp(), http_addr, grpc_addr FROM plughost_lease WHERE id = 1",
            &[],
        )
        .await
        .map_err(|source| LeaseError { what: "cannot read the lease", source })?;
    Ok(row.map(|row| LeaseState {
        holder: row.get(0),
        epoch: row.get(1),
        live: row.get(2),
        http_addr: row.get(3),
        grpc_addr: row.get(4),
    }))
}
