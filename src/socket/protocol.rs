//! The agent socket's protocol: one JSON object per line, each way. Pure; the server and
//! the harness both use these types. See docs/socket-protocol.md.
//!
//! An agent never says who it is: the daemon knows from the socket the connection came in
//! on, so no message carries an agent name, and unknown fields are refused.

use serde::{Deserialize, Serialize};

/// Version spoken by this build; `hello` carries the client's.
pub const VERSION: u32 = 1;

/// Longest accepted line, newline included. Longer input is answered with an error and
/// the connection is closed, so one agent cannot make the daemon buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;

/// Largest `data` of an event, as compact JSON: each event is a journald entry, and the
/// rate limit (socket::throttle) times this bounds what one agent writes to the journal
/// (100/s × 4 KiB). A harness reports a few small fields per event.
pub const MAX_EVENT_DATA: usize = 4 * 1024;

/// Harness → daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First message; answered with `Welcome`.
    Hello { version: u32 },
    /// Liveness; answered with `Pong`. A harness whose ping goes unanswered reconnects with
    /// backoff; systemd's watchdog does not depend on it (the agent outlives the daemon).
    Ping {},
    /// Something the agent wants in the journal (`HIVE_AGENT_EVENT=<name>`).
    Event {
        name: String,
        #[serde(default)]
        data: serde_json::Value,
    },
    /// A request for an admin's approval, e.g. a change of the agent's own spec.
    RequestApproval {
        kind: String,
        payload: serde_json::Value,
    },
    /// Turns this connection into the agent's feed: answered with `Subscribed`, then the
    /// daemon also writes [`Push`] lines on it (decisions on the agent's approvals,
    /// restarts ahead, admins' messages). Only a harness that asks gets pushes, so one
    /// that predates them never reads a line it does not know.
    Subscribe {},
    /// The agent's own approvals, newest last (at most [`MAX_LISTED`]); answered with `Data`.
    MyApprovals {},
    /// One of the agent's own approvals; answered with `Data`. Another agent's id is
    /// answered as if it did not exist.
    ApprovalStatus { id: i64 },
    /// What the agent is (name, PATH, binds, limits, pending approvals); answered with `Data`.
    Whoami {},
}

/// The core's bound on what `my_approvals` lists and `subscribe` replays.
pub const MAX_LISTED: usize = crate::hive::agent_side::MAX_LISTED;

/// Daemon → harness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Welcome {
        agent: String,
        version: u32,
    },
    Pong,
    Ok,
    /// An approval was recorded as pending.
    ApprovalPending {
        id: i64,
    },
    Error {
        error: String,
    },
    /// The connection is now the agent's feed (see `Request::Subscribe`).
    Subscribed,
    /// The answer to a query (`my_approvals`, `approval_status`, `whoami`).
    Data {
        data: serde_json::Value,
    },
}

/// Daemon → harness, unasked, only on a connection that sent `subscribe`. Interleaved
/// with the replies to what the harness sends on that connection, told apart by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Push {
    /// An admin decided on one of the agent's approvals, or applying it ended. `status` is
    /// approved, denied, applied or failed; `note` the admin's note or why it failed. Sent
    /// again for the agent's recent decisions on every `subscribe` (a harness restarted by
    /// the very change it asked for learns it was applied), so a harness keeps each
    /// (id, status) once.
    ApprovalDecided {
        id: i64,
        kind: String,
        status: String,
        #[serde(default)]
        note: String,
    },
    /// An approved change is about to restart the agent's container in `grace_secs`.
    RestartPending { id: i64, grace_secs: u64 },
    /// An admin's `hivectl tell`: wakes a turn (in the turn loop) with `message`.
    Wake { reason: String, message: String },
}

/// One line the daemon sends on a subscribed connection: a reply or a push.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Incoming {
    Push(Push),
    Reply(Reply),
}

/// Parses one line (without its newline). The error is a one-line reason to send back.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let req: Request = serde_json::from_slice(line)
        .map_err(|e| crate::spec::one_line(&format!("malformed message: {e}")))?;
    if let Request::Event { name, .. } = &req {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err("event name must be 1-64 characters of a-z, 0-9 and _".into());
        }
    }
    Ok(req)
}

/// One line to send, newline included.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(msg).expect("protocol messages serialize");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for req in [
            Request::Hello { version: 1 },
            Request::Ping {},
            Request::Event {
                name: "turn_done".into(),
                data: serde_json::json!({"n": 3}),
            },
            Request::RequestApproval {
                kind: "spec_change".into(),
                payload: serde_json::json!({"path": ["/x"]}),
            },
            Request::Subscribe {},
            Request::MyApprovals {},
            Request::ApprovalStatus { id: 3 },
            Request::Whoami {},
        ] {
            let line = encode(&req);
            assert_eq!(*line.last().unwrap(), b'\n');
            assert_eq!(parse_request(&line[..line.len() - 1]).unwrap(), req);
        }
        let welcome = encode(&Reply::Welcome {
            agent: "alice".into(),
            version: VERSION,
        });
        assert_eq!(
            String::from_utf8(welcome).unwrap(),
            "{\"type\":\"welcome\",\"agent\":\"alice\",\"version\":1}\n"
        );
    }

    #[test]
    fn refuses_malformed_input_in_one_line() {
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"type\":\"nope\"}",
            b"{\"type\":\"hello\"}",
            b"{\"type\":\"ping\",\"agent\":\"bob\"}",
            b"{\"type\":\"event\",\"name\":\"Bad Name\"}",
            b"{\"type\":\"event\",\"name\":\"\"}",
            b"\xff\xfe",
            b"[1,2,3]",
        ] {
            let err = parse_request(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn pushes_and_replies_are_told_apart_on_a_subscribed_connection() {
        let push = Push::ApprovalDecided {
            id: 4,
            kind: "spec_change".into(),
            status: "applied".into(),
            note: String::new(),
        };
        let line = encode(&push);
        let got: Incoming = serde_json::from_slice(&line[..line.len() - 1]).unwrap();
        assert_eq!(got, Incoming::Push(push));
        let got: Incoming = serde_json::from_slice(b"{\"type\":\"pong\"}").unwrap();
        assert_eq!(got, Incoming::Reply(Reply::Pong));
        // An old harness's Reply parser refuses a push, which is why only a harness that
        // subscribes is sent any.
        assert!(serde_json::from_slice::<Reply>(&line[..line.len() - 1]).is_err());
    }

    #[test]
    fn an_agent_cannot_name_itself() {
        // Identity comes from the socket; a payload that tries to name an agent is refused.
        assert!(parse_request(br#"{"type":"hello","version":1,"agent":"bob"}"#).is_err());
    }
}
