//! Turns unit state snapshots into crash events, once per crash ([`CrashTracker`], pure),
//! and the plumbing both watches share: the stream of systemd's PropertiesChanged, the
//! unit a signal is about, the crash's journal entry. The host's watch (`watch.rs`) and
//! each harness's (`harness_supervisor.rs`) feed it what systemd reports.

use std::collections::HashMap;

use anyhow::{Context, Result};
use zbus::{Connection, MatchRule, MessageStream};

use crate::journal::{self, fields, Event};
use crate::spec::AgentName;
use crate::systemd::{unit_name_from_path, ActiveState, SubState, UnitStatus, UNIT_PATH_PREFIX};

/// What a state change means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The unit's main process ended unexpectedly (systemd may restart it).
    Crash,
    /// systemd gave up restarting it: the start limit was hit.
    CrashLoop,
}

/// What was seen of one unit's current invocation.
#[derive(Debug, Default)]
struct Seen {
    invocation: String,
    sub_state: SubState,
    crash_reported: bool,
    loop_reported: bool,
}

/// Remembers, per unit, what was already reported for its current invocation, so the
/// several PropertiesChanged signals of one crash yield one event.
#[derive(Debug, Default)]
pub struct CrashTracker {
    units: HashMap<String, Seen>,
}

impl CrashTracker {
    pub fn observe(&mut self, st: &UnitStatus) -> Option<Verdict> {
        let seen = self.units.entry(st.unit.clone()).or_default();
        if seen.invocation != st.invocation_id {
            *seen = Seen {
                invocation: st.invocation_id.clone(),
                ..Seen::default()
            };
        }
        let was_restarting = seen.sub_state.is_auto_restart();
        seen.sub_state = st.sub_state.clone();

        // systemd 252 keeps the last crash's Result when an automatic restart hits the start
        // limit: the unit just goes from auto-restart to failed in the same invocation.
        // "start-limit-hit" is what a refused manual start reports.
        let gave_up = st.is_failed() && (was_restarting || st.result == "start-limit-hit");
        if gave_up && !seen.loop_reported {
            seen.loop_reported = true;
            seen.crash_reported = true;
            return Some(Verdict::CrashLoop);
        }
        // Result is set the moment the main process dies, as systemd starts cleaning up the
        // rest of the cgroup (deactivating, stop-sigkill for KillMode=mixed); reporting
        // there rather than at auto-restart saves the ~70 ms systemd takes to empty a
        // container's cgroup. An admin's stop also deactivates, but its Result is success.
        let down = st.active_state == ActiveState::Deactivating
            || st.sub_state.is_auto_restart()
            || st.is_failed();
        let crashed = down
            && !st.result.is_empty()
            && st.result != "success"
            && st.result != "start-limit-hit";
        if crashed && !seen.crash_reported {
            seen.crash_reported = true;
            return Some(Verdict::Crash);
        }
        None
    }

    /// Takes a change that cannot be a crash as it is, without reading the unit: systemd
    /// says the unit is up and not waiting to restart (starting, running, reloading), and
    /// [`Self::observe`] reports only from a unit that is down. Its SubState is kept, as
    /// `observe` keeps it, for telling later whether a failure ended a restart; a new
    /// invocation is noticed at the next read, which starts its record afresh. `false`:
    /// the unit must be read (anything else, or a signal without both states).
    pub fn up_without_read(&mut self, change: &UnitChange) -> bool {
        let (Some(active), Some(sub)) = (&change.active_state, &change.sub_state) else {
            return false;
        };
        if !active.is_up() || sub.is_auto_restart() {
            return false;
        }
        if let Some(seen) = self.units.get_mut(&change.unit) {
            seen.sub_state = sub.clone();
        }
        true
    }

    pub fn forget(&mut self, unit: &str) {
        self.units.remove(unit);
    }
}

/// A stream of systemd's PropertiesChanged of units' Unit interface (objects under its
/// unit path; the bus itself drops the other interfaces' signals, which come with each
/// change too, by their first argument). `queue` bounds the messages held for a slow
/// reader, and is allocated up front: the host's stream sees every agent unit, each
/// container's sees one harness.
pub(super) async fn unit_changes(conn: &Connection, queue: usize) -> Result<MessageStream> {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.systemd1")?
        .interface("org.freedesktop.DBus.Properties")?
        .member("PropertiesChanged")?
        .path_namespace(UNIT_PATH_PREFIX.trim_end_matches('/'))?
        .add_arg(UNIT_IFACE)?
        .build();
    MessageStream::for_match_rule(rule, conn, Some(queue))
        .await
        .context("watching unit PropertiesChanged")
}

/// What one PropertiesChanged of a unit's Unit interface says: which unit, and its new
/// ActiveState and SubState (systemd sends both, with their values, in each one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitChange {
    pub unit: String,
    pub active_state: Option<ActiveState>,
    pub sub_state: Option<SubState>,
}

/// The interface whose PropertiesChanged carries ActiveState/SubState; the Service
/// interface's signal comes with the same change, so reacting to one of them is enough.
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";

/// The change a PropertiesChanged message tells, if it changed the Unit interface of a unit
/// `wanted` takes; the body is read only then (the host's stream carries every unit's).
pub(super) fn unit_change(
    msg: &zbus::Message,
    wanted: impl Fn(&str) -> bool,
) -> Option<UnitChange> {
    let unit = unit_name_from_path(msg.header().path()?.as_str())?;
    if !wanted(&unit) {
        return None;
    }
    let (iface, changed, _): (
        String,
        HashMap<String, zbus::zvariant::OwnedValue>,
        Vec<String>,
    ) = msg.body().deserialize().ok()?;
    if iface != UNIT_IFACE {
        return None;
    }
    let text = |key: &str| {
        changed
            .get(key)
            .and_then(|v| String::try_from(v.clone()).ok())
    };
    Some(UnitChange {
        unit,
        active_state: text("ActiveState").map(ActiveState::from),
        sub_state: text("SubState").map(SubState),
    })
}

fn crash_fields(st: &UnitStatus) -> Vec<(&'static str, String)> {
    vec![
        (fields::RESULT, st.result.clone()),
        (fields::EXEC_MAIN_CODE, st.exec_main_code_name().to_owned()),
        (fields::EXEC_MAIN_STATUS, st.exec_main_status.to_string()),
        (fields::N_RESTARTS, st.n_restarts.to_string()),
        (fields::INVOCATION_ID, st.invocation_id.clone()),
    ]
}

pub(super) fn report(verdict: Verdict, crash_event: Event, agent: &AgentName, st: &UnitStatus) {
    let (event, what) = match verdict {
        Verdict::Crash => (crash_event, "crashed"),
        Verdict::CrashLoop => (
            Event::CrashLoop,
            "hit its start limit; systemd gave up restarting it",
        ),
    };
    journal::emit(
        event,
        Some(agent),
        Some(&st.unit),
        &crash_fields(st),
        &format!(
            "agent {agent}: {} {what} (result {}, {} status {}, {} restarts)",
            st.unit,
            st.result,
            st.exec_main_code_name(),
            st.exec_main_status,
            st.n_restarts
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(active: &str, sub: &str, result: &str, inv: &str) -> UnitStatus {
        UnitStatus {
            unit: "hive-agent-alice.service".into(),
            active_state: ActiveState::from(active),
            sub_state: SubState::from(sub),
            result: result.into(),
            invocation_id: inv.into(),
            ..Default::default()
        }
    }

    #[test]
    fn one_event_per_crash() {
        let mut t = CrashTracker::default();
        assert_eq!(t.observe(&st("active", "running", "success", "a")), None);
        assert_eq!(
            t.observe(&st("activating", "auto-restart", "signal", "a")),
            Some(Verdict::Crash)
        );
        // The same crash seen again (Service and Unit interfaces each signal).
        assert_eq!(
            t.observe(&st("activating", "auto-restart", "signal", "a")),
            None
        );
        // Restarted (new invocation), crashes again.
        assert_eq!(t.observe(&st("active", "running", "success", "b")), None);
        assert_eq!(
            t.observe(&st("activating", "auto-restart", "exit-code", "b")),
            Some(Verdict::Crash)
        );
    }

    #[test]
    fn a_crash_is_reported_as_soon_as_systemd_cleans_up_after_it() {
        let mut t = CrashTracker::default();
        // What systemd 252 reports right after kill -9 of a KillMode=mixed unit's main process.
        assert_eq!(
            t.observe(&st("deactivating", "stop-sigkill", "signal", "a")),
            Some(Verdict::Crash)
        );
        assert_eq!(
            t.observe(&st("deactivating", "stop-post", "signal", "a")),
            None
        );
        assert_eq!(
            t.observe(&st("activating", "auto-restart", "signal", "a")),
            None
        );
        assert_eq!(
            t.observe(&st("deactivating", "stop-watchdog", "watchdog", "b")),
            Some(Verdict::Crash)
        );
    }

    #[test]
    fn auto_restart_then_failed_is_systemd_giving_up() {
        // What systemd 252 does when restarts hit the start limit.
        let mut t = CrashTracker::default();
        assert_eq!(t.observe(&st("activating", "start", "", "e")), None);
        assert_eq!(
            t.observe(&st("activating", "auto-restart", "exit-code", "e")),
            Some(Verdict::Crash)
        );
        assert_eq!(
            t.observe(&st("failed", "failed", "exit-code", "e")),
            Some(Verdict::CrashLoop)
        );
        assert_eq!(t.observe(&st("failed", "failed", "exit-code", "e")), None);
    }

    #[test]
    fn a_refused_manual_start_is_a_loop_and_a_plain_failure_a_crash() {
        let mut t = CrashTracker::default();
        assert_eq!(
            t.observe(&st("failed", "failed", "start-limit-hit", "a")),
            Some(Verdict::CrashLoop)
        );
        let mut t = CrashTracker::default();
        assert_eq!(
            t.observe(&st("failed", "failed", "watchdog", "a")),
            Some(Verdict::Crash)
        );
        assert_eq!(t.observe(&st("failed", "failed", "watchdog", "a")), None);
    }

    fn change(active: &str, sub: &str) -> UnitChange {
        UnitChange {
            unit: "hive-agent-alice.service".into(),
            active_state: Some(ActiveState::from(active)),
            sub_state: Some(SubState::from(sub)),
        }
    }

    #[test]
    fn only_a_unit_up_and_not_restarting_goes_unread() {
        let mut t = CrashTracker::default();
        for (active, sub) in [
            ("activating", "start"),
            ("active", "running"),
            ("reloading", "reload"),
        ] {
            assert!(t.up_without_read(&change(active, sub)), "{active} {sub}");
        }
        for (active, sub) in [
            ("activating", "auto-restart"),
            ("activating", "auto-restart-queued"),
            ("deactivating", "stop-sigkill"),
            ("failed", "failed"),
            ("inactive", "dead"),
        ] {
            assert!(!t.up_without_read(&change(active, sub)), "{active} {sub}");
        }
        let mut without_sub = change("active", "running");
        without_sub.sub_state = None;
        assert!(!t.up_without_read(&without_sub));
    }

    #[test]
    fn skipping_the_reads_of_a_unit_up_reports_what_reading_them_does() {
        // Crashes, restarts that come up, systemd giving up, an admin's stop and start: a
        // tracker that reads the unit at every change and one that leaves the changes to
        // an up unit unread report the same, at the same changes.
        let seq = [
            st("activating", "start", "", "a"),
            st("active", "running", "success", "a"),
            st("deactivating", "stop-sigkill", "signal", "a"),
            st("activating", "auto-restart", "signal", "a"),
            st("activating", "start", "", "b"),
            st("active", "running", "success", "b"),
            st("activating", "auto-restart", "exit-code", "b"),
            st("activating", "start", "", "c"),
            st("activating", "auto-restart", "exit-code", "c"),
            st("failed", "failed", "exit-code", "c"),
            st("activating", "start", "", "d"),
            st("active", "running", "success", "d"),
            st("reloading", "reload", "success", "d"),
            st("deactivating", "stop-sigterm", "success", "d"),
            st("inactive", "dead", "success", "d"),
            st("activating", "start", "", "e"),
            st("active", "running", "success", "e"),
            st("failed", "failed", "watchdog", "e"),
        ];
        let (mut reads, mut skips) = (CrashTracker::default(), CrashTracker::default());
        for s in &seq {
            let read = reads.observe(s);
            let change = change(s.active_state.as_str(), s.sub_state.as_str());
            let skipped = if skips.up_without_read(&change) {
                None
            } else {
                skips.observe(s)
            };
            assert_eq!(read, skipped, "{s:?}");
        }
    }

    #[test]
    fn an_admins_stop_is_no_crash() {
        let mut t = CrashTracker::default();
        for s in [
            st("deactivating", "stop-sigterm", "success", "a"),
            st("deactivating", "stop-sigkill", "success", "a"),
            st("deactivating", "stop-post", "success", "a"),
            st("inactive", "dead", "success", "a"),
            st("activating", "start", "", "b"),
        ] {
            assert_eq!(t.observe(&s), None, "{s:?}");
        }
    }
}
