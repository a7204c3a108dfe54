//! Page sessions: signing in with a token on the login page gives the browser a random
//! session id in an HttpOnly, SameSite=Strict cookie. Sessions live in memory (an admin
//! restart signs everyone out), expire, and are capped in number. Only a hash of the id
//! is kept, so a memory dump does not hand out live sessions.

use std::{collections::HashMap, sync::Mutex};

use super::{Role, tokens::hash};

/// How long a session lasts.
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
/// Most sessions kept at once; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The token name the session was opened with.
    pub user: String,
    pub role: Role,
    pub expires_at: i64,
}

#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session and returns its id (the cookie's value).
    pub fn open(&self, user: &str, role: Role, now_ms: i64) -> String {
        let id = crate::random::hex(32);
        let mut map = self.by_hash.lock().expect("sessions lock");
        map.retain(|_, s| s.expires_at > now_ms);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires_at).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(hash(&id), Session { user: user.to_string(), role, expires_at: now_ms + SESSION_TTL_MS });
        id
    }

    /// The live session with this id.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        if id.len() != 64 {
            return None;
        }
        let map = self.by_hash.lock().expect("sessions lock");
        map.get(&hash(id)).filter(|s| s.expires_at > now_ms).cloned()
    }

    pub fn close(&self, id: &str) {
        self.by_hash.lock().expect("sessions lock").remove(&hash(id));
    }

    /// Ends every session opened with this token name (the token was revoked).
    pub fn close_user(&self, user: &str) {
        self.by_hash.lock().expect("sessions lock").retain(|_, s| s.user != user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_until_it_expires_or_is_closed() {
        let s = Sessions::default();
        let id = s.open("alice", Role::Operator, 1000);
        assert_eq!(s.get(&id, 1000).unwrap().role, Role::Operator);
        assert!(s.get(&id, 1000 + SESSION_TTL_MS).is_none(), "expired");
        let id2 = s.open("bob", Role::Viewer, 1000);
        s.close_user("bob");
        assert!(s.get(&id2, 1001).is_none());
        let id3 = s.open("carol", Role::Admin, 1000);
        s.close(&id3);
        assert!(s.get(&id3, 1001).is_none());
        assert!(s.get("short", 1001).is_none());
    }
}
