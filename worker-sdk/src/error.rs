//! The SDK's error type, and which errors end the worker (fatal) versus which make it
//! reconnect (retryable).

/// The response metadata by which a standby admin says what it is.
const ROLE_HEADER: &str = "plughost-role";
/// The response metadata by which a standby admin names the leader's gRPC `host:port`.
const LEADER_HEADER: &str = "plughost-leader";

/// Why a worker stopped, a stream ended, or a reply could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin answered the hello with `accepted: false`. Retrying with the same
    /// identity would be rejected again, so the worker stops.
    #[error("admin rejected this worker: {message}")]
    Rejected { message: String },

    /// The worker configuration cannot work (bad admin address, bad token, no handlers).
    #[error("invalid worker configuration: {0}")]
    Config(String),

    /// The TLS settings cannot work (unreadable PEM, a certificate without its key).
    #[error("invalid tls settings: {0}")]
    Tls(String),

    /// A local file operation failed (the worker id file, certificate files).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The admin could not be reached, or the connection broke: refused, unreachable,
    /// TLS handshake or certificate refused, connection reset.
    #[error("cannot reach the admin at {address}: {detail}")]
    Transport {
        address: String,
        /// The whole source chain, which tonic's own message leaves out.
        detail: String,
    },

    /// The admin ended the stream with a gRPC status.
    #[error("the admin ended the stream: {}: {}", .0.code(), .0.message())]
    Stream(tonic::Status),

    /// The admin closed the stream without a status.
    #[error("the admin closed the stream")]
    StreamClosed,

    /// The admin broke the conversation rules (e.g. no AdminHello first).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The work this sender belongs to was canceled; stop and return.
    #[error("canceled: {reason}")]
    Canceled { reason: String },

    /// The worker has stopped, so nothing more can be sent.
    #[error("the worker has stopped")]
    Stopped,
}

impl Error {
    /// True for errors that retrying cannot fix: the admin rejected the worker or its
    /// token (`UNAUTHENTICATED`, `PERMISSION_DENIED`), or the configuration, TLS
    /// settings or local files are unusable. The reconnect loop stops on these and
    /// retries everything else.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Rejected { .. } | Error::Config(_) | Error::Tls(_) | Error::Io { .. } => true,
            Error::Stream(status) => {
                matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)
            }
            _ => false,
        }
    }

    /// True when the admin answered as a standby: `UNAVAILABLE` with the metadata
    /// `plughost-role: standby` or a message starting with "not the leader". A leader
    /// that lost its lease closes its streams the same way. Retryable: the worker moves
    /// on to its next admin address.
    pub fn is_not_the_leader(&self) -> bool {
        let Error::Stream(status) = self else { return false };
        let standby = status
            .metadata()
            .get(ROLE_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|role| role.trim().eq_ignore_ascii_case("standby"));
        status.code() == tonic::Code::Unavailable && (standby || status.message().starts_with("not the leader"))
    }

    /// The leader's gRPC `host:port` a not-the-leader answer named
    /// (`plughost-leader` metadata), if it named one.
    pub(crate) fn leader_hint(&self) -> Option<&str> {
        if !self.is_not_the_leader() {
            return None;
        }
        let Error::Stream(status) = self else { return None };
        let leader = status.metadata().get(LEADER_HEADER)?.to_str().ok()?.trim();
        (!leader.is_empty()).then_some(leader)
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    pub(crate) fn transport(address: &str, source: &dyn std::error::Error) -> Self {
        Error::Transport { address: address.to_string(), detail: chain(source) }
    }

    /// A failed call: a status made up locally from a connection error (it has a
    /// source) is a transport error; one the admin sent is a stream error.
    pub(crate) fn call(address: &str, status: tonic::Status) -> Self {
        match std::error::Error::source(&status) {
            Some(source) => {
                let cause = chain(source);
                let detail =
                    if cause.starts_with(status.message()) { cause } else { format!("{}: {cause}", status.message()) };
                Error::Transport { address: address.to_string(), detail }
            }
            None => Error::Stream(status),
        }
    }
}

/// An error and all its sources, joined with ": ", each cause once (an error whose
/// message already includes its source's is not followed by that source again).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_and_bad_settings_are_fatal_and_stream_drops_are_not() {
        assert!(Error::Rejected { message: "no".into() }.is_fatal());
        assert!(Error::Config("x".into()).is_fatal());
        assert!(Error::Tls("x".into()).is_fatal());
        assert!(!Error::StreamClosed.is_fatal());
        assert!(!Error::Stream(tonic::Status::unavailable("gone")).is_fatal());
        assert!(!Error::Protocol("x".into()).is_fatal());
    }

    fn standby(message: &str, metadata: &[(&'static str, &str)]) -> Error {
        let mut status = tonic::Status::unavailable(message);
        for (key, value) in metadata {
            status.metadata_mut().insert(*key, value.parse().unwrap());
        }
        Error::Stream(status)
    }

    #[test]
    fn a_standby_is_known_by_its_role_or_its_message_and_may_name_the_leader() {
        let by_message = standby("not the leader: this admin is a standby; the leader is 10.0.0.5:33646", &[]);
        assert!(by_message.is_not_the_leader() && !by_message.is_fatal());
        assert_eq!(by_message.leader_hint(), None);
        let by_role = standby("standing by", &[("plughost-role", "standby"), ("plughost-leader", "10.0.0.5:33646")]);
        assert!(by_role.is_not_the_leader());
        assert_eq!(by_role.leader_hint(), Some("10.0.0.5:33646"));
        let empty_hint = standby("not the leader", &[("plughost-leader", " ")]);
        assert_eq!(empty_hint.leader_hint(), None);
        // Another code, or an UNAVAILABLE that says nothing of leadership, is an ordinary drop.
        assert!(!standby("the fake admin stopped", &[]).is_not_the_leader());
        let mut internal = tonic::Status::internal("not the leader");
        internal.metadata_mut().insert("plughost-role", "standby".parse().unwrap());
        assert!(!Error::Stream(internal).is_not_the_leader());
        assert!(!Error::StreamClosed.is_not_the_leader());
    }
}
