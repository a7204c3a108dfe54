use std::time::Duration;

use tokio::time::Instant;

use super::{
    lease::{self, Lease},
    *,
};

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    crate::store::postgres::ensure_lease_table(&client).await.expect("lease table");
    client
}

fn lease(holder: &str, ttl: Duration) -> Lease {
    Lease::new(holder.into(), ttl, format!("{holder}:23646"), format!("{holder}:33646"))
}

#[test]
fn the_gate_holds_until_its_deadline_and_never_after_a_revoke() {
    let gate = LeaseGate::always();
    assert!(gate.holds(), "with SQLite there is no deadline");
    gate.extend(Instant::now() + Duration::from_secs(60));
    assert!(gate.holds());
    gate.extend(Instant::now() - Duration::from_millis(1));
    assert!(!gate.holds(), "a deadline in the past closes the gate");
    gate.extend(Instant::now() + Duration::from_secs(60));
    gate.revoke();
    assert!(!gate.holds());
}

#[test]
fn the_leader_stops_a_fifth_of_the_lease_before_it_can_expire() {
    let l = lease("a", Duration::from_secs(10));
    let since = Instant::now();
    let held = lease::Held { epoch: 1, since };
    assert_eq!(l.must_stop_by(&held), since + Duration::from_secs(8));
    assert_eq!(l.renew_every(), Duration::from_millis(3333) + Duration::from_nanos(333_333));
}

#[tokio::test]
async fn one_admin_takes_the_lease_the_other_only_after_it_expires_and_the_epoch_moves() {
    let url = crate::test_support::postgres_database("lease");
    let db = client(&url).await;
    let ttl = Duration::from_millis(400);
    let (a, b) = (lease("a", ttl), lease("b", ttl));
    let held_a = a.try_acquire(&db).await.unwrap().expect("a free lease is taken");
    assert_eq!(held_a.epoch, 1);
    assert!(b.try_acquire(&db).await.unwrap().is_none(), "a live lease is not taken");
    let state = lease::current(&db).await.unwrap().unwrap();
    assert_eq!((state.holder.as_str(), state.epoch, state.live), ("a", 1, true));
    assert_eq!(state.grpc_addr, "a:33646");
    let held_a = a.renew(&db, &held_a).await.unwrap().expect("the holder renews");

    // b waits for the expiry (the database's clock), then takes it with a new epoch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held_b = loop {
        if let Some(held) = b.try_acquire(&db).await.unwrap() {
            break held;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(held_b.epoch, 2);
    assert!(a.renew(&db, &held_a).await.unwrap().is_none(), "the old holder cannot renew a lease it lost");
    assert!(a.try_acquire(&db).await.unwrap().is_none());
    let state = lease::current(&db).await.unwrap().unwrap();
    assert_eq!((state.holder.as_str(), state.epoch), ("b", 2));

    // A release hands the lease over at once.
    b.release(&db, &held_b).await.unwrap();
    let again = a.try_acquire(&db).await.unwrap().expect("a released lease is free");
    assert_eq!(again.epoch, 3);
    // A stale release does nothing.
    b.release(&db, &held_b).await.unwrap();
    assert!(lease::current(&db).await.unwrap().unwrap().live);
}

#[tokio::test]
async fn a_refusal_from_a_standby_says_so_in_its_metadata() {
    let status = not_leader("this admin is a standby", Some("10.0.0.5:33646"));
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "not the leader: this admin is a standby; the leader is 10.0.0.5:33646");
    assert_eq!(status.metadata().get(ROLE_HEADER).unwrap(), "standby");
    assert_eq!(status.metadata().get(LEADER_HEADER).unwrap(), "10.0.0.5:33646");
    let unknown = not_leader("no admin leads", Some(""));
    assert_eq!(unknown.message(), "not the leader: no admin leads");
    assert!(unknown.metadata().get(LEADER_HEADER).is_none());
}

#[test]
fn the_grpc_address_advertised_is_the_http_host_with_the_grpc_port() {
    let grpc: std::net::SocketAddr = "0.0.0.0:33646".parse().unwrap();
    assert_eq!(advertised_grpc("admin-1.example:23646", grpc), "admin-1.example:33646");
    assert_eq!(advertised_grpc("https://admin-1.example:8443/", grpc), "admin-1.example:33646");
    assert_eq!(advertised_grpc("noport", grpc), "0.0.0.0:33646");
}
