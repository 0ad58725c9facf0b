//! Every event hyperhive reports, its fixed MESSAGE_ID and its fields, in one place.
//! units/catalog/hyperhive.catalog explains each MESSAGE_ID to `journalctl -x`; a test
//! keeps the two in step.
//!
//! Events are ordinary `log` records whose key-values become journal fields, so
//! `journalctl HIVE_AGENT=alice` and `journalctl HIVE_EVENT=agent_created` work as is.

pub mod fields;

use log::kv::{ToValue, Value};
use log::{Level, Record};

use crate::spec::AgentName;

/// The event types (docs/events.md, the contract admins and tools read). The MESSAGE_ID of each never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    AgentCreated,
    AgentStarted,
    AgentStopped,
    AgentDestroyed,
    ContainerCrash,
    HarnessCrash,
    ApprovalRequested,
    ApprovalApproved,
    ApprovalDenied,
    ApprovalFailed,
    RebuildStarted,
    RebuildFinished,
    Adopted,
    /// Something an agent reported through its socket (`HIVE_AGENT_EVENT=`).
    AgentEvent,
    /// A unit crashed so often that systemd gave up restarting it (start limit hit).
    CrashLoop,
    /// An approved change was applied.
    ApprovalApplied,
    /// The daemon began comparing specs with live units (at its start, or on reload).
    ReconcileStarted,
    /// ... and finished; the counts are in `HIVE_CREATED=`, `HIVE_REBUILT=`, ….
    ReconcileFinished,
    /// Reconcile could not bring one agent to its spec (`HIVE_ERROR=` says why).
    ReconcileFailed,
    /// An agent's request was refused at the door (`HIVE_ERROR=` says why); nothing stored.
    ApprovalRefused,
    /// An agent sends faster than its rate allows; its connections are slowed down.
    AgentThrottled,
    /// The approvals store cannot be used; agents and the lifecycle API go on without it.
    StoreUnavailable,
    /// A turn of an agent in the turn loop started or ended, as its harness reported it
    /// (`HIVE_TURN=`, `HIVE_TURN_PHASE=`, `HIVE_DATA=`).
    AgentTurn,
    /// An admin's `hivectl tell` reached the agent's harness (`HIVE_TOLD_BY=`, `HIVE_MESSAGE_TEXT=`).
    AgentTold,
    /// A Claude Code agent spent its daily budget; its wakes wait (`HIVE_DATA=`).
    AgentOverBudget,
    /// The kernel killed a process of an agent for memory, inside the agent's own cgroup
    /// (its `MemoryMax=`); `HIVE_OOM_KILLS=` counts them since the container started.
    AgentOom,
    /// An admin's `hivectl login` started claude's login flow (or the claude command
    /// named, `HIVE_LOGIN_ARGS=`) in a Claude Code agent's container.
    AgentLogin,
    /// An agent's egress proxy let a connection through; written when it closed, with
    /// `HIVE_DEST_HOST=`, `HIVE_DEST_PORT=`, `HIVE_BYTES_OUT=`, `HIVE_BYTES_IN=`,
    /// `HIVE_DURATION_MS=` (src/egress).
    EgressAllowed,
    /// ... or refused one (`HIVE_REASON=` says why: not on the allowlist, a name that
    /// resolves to loopback or link-local, no answer).
    EgressRefused,
    /// Past its rate the proxy journals a count per interval instead of each connection
    /// (`HIVE_ALLOWED=`, `HIVE_REFUSED=`).
    EgressSummary,
}

impl Event {
    pub const ALL: [Event; 30] = [
        Event::AgentCreated,
        Event::AgentStarted,
        Event::AgentStopped,
        Event::AgentDestroyed,
        Event::ContainerCrash,
        Event::HarnessCrash,
        Event::ApprovalRequested,
        Event::ApprovalApproved,
        Event::ApprovalDenied,
        Event::ApprovalFailed,
        Event::RebuildStarted,
        Event::RebuildFinished,
        Event::Adopted,
        Event::AgentEvent,
        Event::CrashLoop,
        Event::ApprovalApplied,
        Event::ReconcileStarted,
        Event::ReconcileFinished,
        Event::ReconcileFailed,
        Event::ApprovalRefused,
        Event::AgentThrottled,
        Event::StoreUnavailable,
        Event::AgentTurn,
        Event::AgentTold,
        Event::AgentOverBudget,
        Event::AgentOom,
        Event::AgentLogin,
        Event::EgressAllowed,
        Event::EgressRefused,
        Event::EgressSummary,
    ];

    /// The `HIVE_EVENT=` value.
    pub fn name(self) -> &'static str {
        match self {
            Event::AgentCreated => "agent_created",
            Event::AgentStarted => "agent_started",
            Event::AgentStopped => "agent_stopped",
            Event::AgentDestroyed => "agent_destroyed",
            Event::ContainerCrash => "container_crash",
            Event::HarnessCrash => "harness_crash",
            Event::ApprovalRequested => "approval_requested",
            Event::ApprovalApproved => "approval_approved",
            Event::ApprovalDenied => "approval_denied",
            Event::ApprovalFailed => "approval_failed",
            Event::RebuildStarted => "rebuild_started",
            Event::RebuildFinished => "rebuild_finished",
            Event::Adopted => "adopted",
            Event::AgentEvent => "agent_event",
            Event::CrashLoop => "crash_loop",
            Event::ApprovalApplied => "approval_applied",
            Event::ReconcileStarted => "reconcile_started",
            Event::ReconcileFinished => "reconcile_finished",
            Event::ReconcileFailed => "reconcile_failed",
            Event::ApprovalRefused => "approval_refused",
            Event::AgentThrottled => "agent_throttled",
            Event::StoreUnavailable => "store_unavailable",
            Event::AgentTurn => "agent_turn",
            Event::AgentTold => "agent_told",
            Event::AgentOverBudget => "agent_over_budget",
            Event::AgentOom => "agent_oom",
            Event::AgentLogin => "agent_login",
            Event::EgressAllowed => "egress_allowed",
            Event::EgressRefused => "egress_refused",
            Event::EgressSummary => "egress_summary",
        }
    }

    pub fn message_id(self) -> &'static str {
        match self {
            Event::AgentCreated => "ffc53bdd87ad42029d21a54b0c1a89d7",
            Event::AgentStarted => "1e8c700a5af343598472574011f98327",
            Event::AgentStopped => "bfb2458547074171a276582ea1469f74",
            Event::AgentDestroyed => "4a3b5ba3eeee4e8e93fcb8399fc3d380",
            Event::ContainerCrash => "e215e6c97cbb483f80307c26f034c920",
            Event::HarnessCrash => "b3fe37fab41a4b428c3345e61545cce1",
            Event::ApprovalRequested => "01e95c8add644321a37c245f61cda2ab",
            Event::ApprovalApproved => "7d548e2bff9146129c92dc4c777106d0",
            Event::ApprovalDenied => "2804026e1d2148b79bd39fe28331b084",
            Event::ApprovalFailed => "481ee41ac3f846b1a99cc4e3cd0b1c22",
            Event::RebuildStarted => "7d8a0f2fb9ff41718e574cc184cad5ca",
            Event::RebuildFinished => "6c8da9e5feda4834ab0bb97306d4550e",
            Event::Adopted => "a54a698518f54a34b7c4d48f9f549341",
            Event::AgentEvent => "2a2bee29f6cb442da262b09d3384ccb3",
            Event::CrashLoop => "d416cca1d0bf4cabaacad7e4f68351a6",
            Event::ApprovalApplied => "b3e239c4b41d42a28eab770d43438d57",
            Event::ReconcileStarted => "b0a2332afc574bd9b4c2b8b1fe5c4512",
            Event::ReconcileFinished => "559b7c22307e4401993bd8b506b681c6",
            Event::ReconcileFailed => "fc655f64c8fd4b7faab3b0aed80ea0ee",
            Event::ApprovalRefused => "e4b9a9b12535439c8012e2f9f948763a",
            Event::AgentThrottled => "0f0835a15ad345ef9c6eb97f36cba994",
            Event::StoreUnavailable => "5fda441d0693453e89eea15aa2bb6a5e",
            Event::AgentTurn => "8f3c2e5d1a7b4c69b0d4e2f61a9c7b35",
            Event::AgentTold => "c41d7e0a93b24f6f8a25d6b0e7f3918c",
            Event::AgentOverBudget => "5b1e0c7d2f8a4e3b9c6d1a0f7e2b4c58",
            Event::AgentOom => "6cd6b45bb7994e5daae9a064df0424c3",
            Event::AgentLogin => "2b8e4f1a6c3d4e59a7b0c9d8e1f2a3b4",
            Event::EgressAllowed => "5b1f0c2e8a9d4e37b6c1d2e3f4a5b607",
            Event::EgressRefused => "9e2d4c6b8a0f4e1d93c5b7a9e1f3d5c7",
            Event::EgressSummary => "3c7a9e1b5d2f4086a4c8e0b2d6f8a1c3",
        }
    }

    fn level(self) -> Level {
        match self {
            Event::CrashLoop | Event::StoreUnavailable => Level::Error,
            Event::ContainerCrash
            | Event::HarnessCrash
            | Event::ApprovalFailed
            | Event::ApprovalRefused
            | Event::AgentThrottled
            | Event::ReconcileFailed
            | Event::AgentOverBudget
            | Event::AgentOom
            | Event::EgressRefused => Level::Warn,
            _ => Level::Info,
        }
    }
}

/// Writes one event. `extra` adds event-specific fields (e.g. `HIVE_RESULT`).
pub fn emit(
    event: Event,
    agent: Option<&AgentName>,
    unit: Option<&str>,
    extra: &[(&str, String)],
    message: &str,
) {
    let mut kvs: Vec<(&str, Value<'_>)> = vec![
        ("MESSAGE_ID", event.message_id().to_value()),
        (fields::EVENT, event.name().to_value()),
    ];
    if let Some(a) = agent {
        kvs.push((fields::AGENT, a.as_str().to_value()));
    }
    if let Some(u) = unit {
        kvs.push((fields::UNIT, u.to_value()));
    }
    for (k, v) in extra {
        kvs.push((k, v.as_str().to_value()));
    }
    log::logger().log(
        &Record::builder()
            .level(event.level())
            .target("hive-c0re")
            .args(format_args!("{message}"))
            .key_values(&kvs)
            .build(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique_and_well_formed() {
        let mut ids: Vec<_> = Event::ALL.iter().map(|e| e.message_id()).collect();
        let mut names: Vec<_> = Event::ALL.iter().map(|e| e.name()).collect();
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        ids.sort();
        ids.dedup();
        names.sort();
        names.dedup();
        assert_eq!(ids.len(), Event::ALL.len());
        assert_eq!(names.len(), Event::ALL.len());
    }

    #[test]
    fn the_catalog_explains_every_event_once() {
        let catalog = include_str!("../../units/catalog/hyperhive.catalog");
        let entries: Vec<&str> = catalog
            .lines()
            .filter_map(|l| l.strip_prefix("-- "))
            .collect();
        for e in Event::ALL {
            assert_eq!(
                entries.iter().filter(|id| **id == e.message_id()).count(),
                1,
                "catalog entry for {}",
                e.name()
            );
        }
        assert_eq!(entries.len(), Event::ALL.len(), "no stale catalog entries");
    }
}
