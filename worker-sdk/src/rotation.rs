//! Which admin address to dial next, and whether to wait first. Several admins may
//! share one database, with one leader that takes worker streams and standbys that
//! refuse them; the worker walks its address list to find the leader.
//!
//! A round tries every address once, in list order from where the last one left
//! off. An attempt that fails (refused, TLS or hello failed, a standby's "not the
//! leader") moves to the next address at once; only a round that ends without a
//! session waits for the reconnect backoff. A standby that names the leader sends the
//! worker there next, when the leader is in the list and untried this round. After an
//! established session ends, a new round starts at the next address: the old leader
//! is likely gone, so it comes last. A single address is a round of one, so it waits
//! for the backoff after every failure and every dropped session, as it always did.
//! A round in which a standby answered waits only a quarter to one second, whatever the
//! backoff has grown to (`Worker::run`): the group is up and its next leader is at most
//! one lease away.

/// Whether the next attempt may start at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Dial the next address now.
    Now,
    /// A round ended without a session: wait for the backoff first.
    Backoff,
}

/// The walk over the admin addresses (by index).
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    current: usize,
    /// The addresses tried in this round.
    tried: Vec<bool>,
}

impl Rotation {
    /// `len` addresses (at least one); the first attempt goes to the first.
    pub(crate) fn new(len: usize) -> Self {
        assert!(len > 0, "at least one admin address");
        Rotation { current: 0, tried: vec![false; len] }
    }

    /// The address to dial now.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    fn len(&self) -> usize {
        self.tried.len()
    }

    fn after(&self, index: usize) -> usize {
        (index + 1) % self.len()
    }

    /// The attempt at the current address failed before a session began; `leader` is
    /// the index of the address a not-the-leader answer named, if it is in the list.
    pub(crate) fn failed(&mut self, leader: Option<usize>) -> Pace {
        self.tried[self.current] = true;
        if self.tried.iter().all(|t| *t) {
            self.tried.fill(false);
            self.current = leader.unwrap_or_else(|| self.after(self.current));
            return Pace::Backoff;
        }
        self.current = match leader.filter(|i| !self.tried[*i]) {
            Some(leader) => leader,
            None => {
                let mut next = self.after(self.current);
                while self.tried[next] {
                    next = self.after(next);
                }
                next
            }
        };
        Pace::Now
    }

    /// A session at the current address was established and has ended; `leader` as in
    /// [`failed`](Self::failed) (a leader that stepped down may name its successor).
    pub(crate) fn ended(&mut self, leader: Option<usize>) -> Pace {
        self.tried.fill(false);
        if self.len() == 1 {
            // The next address would be the one that just dropped: jitter first, so
            // the workers of a restarting admin do not all return in one instant.
            return Pace::Backoff;
        }
        self.current = leader.filter(|i| *i != self.current).unwrap_or_else(|| self.after(self.current));
        Pace::Now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails `n` attempts in a row; returns the (address, pace) after each.
    fn fail(r: &mut Rotation, n: usize) -> Vec<(usize, Pace)> {
        (0..n)
            .map(|_| {
                let pace = r.failed(None);
                (r.current(), pace)
            })
            .collect()
    }

    #[test]
    fn a_single_address_waits_after_every_failure_and_every_dropped_session() {
        let mut r = Rotation::new(1);
        assert_eq!(r.current(), 0);
        assert_eq!(fail(&mut r, 3), vec![(0, Pace::Backoff); 3]);
        assert_eq!(r.ended(None), Pace::Backoff);
        assert_eq!(r.current(), 0);
        // A standby naming itself (or anything) changes nothing.
        assert_eq!(r.failed(Some(0)), Pace::Backoff);
    }

    #[test]
    fn failures_move_on_at_once_and_only_a_whole_round_waits() {
        let mut r = Rotation::new(3);
        use Pace::*;
        assert_eq!(fail(&mut r, 7), vec![(1, Now), (2, Now), (0, Backoff), (1, Now), (2, Now), (0, Backoff), (1, Now)]);
    }

    #[test]
    fn after_a_session_ends_the_next_address_comes_first_and_the_old_one_last() {
        use Pace::*;
        let mut r = Rotation::new(3);
        assert_eq!(r.failed(None), Now); // 0 is a standby
        assert_eq!(r.current(), 1); // 1 is the leader: a session, which ends
        assert_eq!(r.ended(None), Now);
        assert_eq!(r.current(), 2);
        // 2 and 0 refuse, then the old leader 1, and only then the backoff.
        assert_eq!(fail(&mut r, 3), vec![(0, Now), (1, Now), (2, Backoff)]);
    }

    #[test]
    fn a_session_resets_the_round() {
        use Pace::*;
        let mut r = Rotation::new(2);
        assert_eq!(r.failed(None), Now);
        assert_eq!(r.ended(None), Now); // a session at 1 ended: a fresh round from 0
        assert_eq!(fail(&mut r, 2), vec![(1, Now), (0, Backoff)]);
    }

    #[test]
    fn a_named_leader_is_tried_next_once_per_round() {
        use Pace::*;
        let mut r = Rotation::new(4);
        assert_eq!(r.failed(Some(2)), Now);
        assert_eq!(r.current(), 2);
        // 2 refuses too and names 0, which was tried this round: the walk goes on at 3.
        assert_eq!(r.failed(Some(0)), Now);
        assert_eq!(r.current(), 3);
        assert_eq!(r.failed(None), Now);
        assert_eq!(r.current(), 1);
        // The round is over; a name at its end starts the next round there.
        assert_eq!(r.failed(Some(2)), Backoff);
        assert_eq!(r.current(), 2);
    }

    #[test]
    fn two_standbys_naming_each_other_cannot_loop_without_the_backoff() {
        let mut r = Rotation::new(3);
        let mut waits = 0;
        for attempt in 0..30 {
            let named = if r.current() == 0 { 1 } else { 0 };
            if r.failed(Some(named)) == Pace::Backoff {
                waits += 1;
                assert_eq!(attempt % 3, 2, "every round is three attempts");
            }
        }
        assert_eq!(waits, 10);
    }

    #[test]
    fn a_leader_that_steps_down_may_name_its_successor() {
        let mut r = Rotation::new(3);
        assert_eq!(r.ended(Some(2)), Pace::Now);
        assert_eq!(r.current(), 2);
        // Naming itself is no news: the walk moves on.
        assert_eq!(r.ended(Some(2)), Pace::Now);
        assert_eq!(r.current(), 0);
    }
}
