use super::*;

fn facts(spec: SpecFacts, live: Option<(&str, &str, Option<&str>)>) -> Facts {
    Facts {
        agent: AgentName::parse("alice").unwrap(),
        spec,
        live: live.map(|(a, s, p)| Live {
            active_state: a.into(),
            sub_state: s.into(),
            plan: p.map(Into::into),
        }),
        stopped_by_admin: false,
    }
}

fn valid(plan: &str) -> SpecFacts {
    SpecFacts::Valid {
        plan: plan.into(),
        autostart: true,
    }
}

#[test]
fn after_a_reboot_every_autostart_agent_is_created() {
    assert_eq!(decide(&facts(valid("p1"), None), false), Action::Create);
    // A stopped unit systemd has not collected yet is as good as none.
    let f = facts(valid("p1"), Some(("inactive", "dead", Some("p0"))));
    assert_eq!(decide(&f, false), Action::Create);
}

#[test]
fn matching_units_are_kept_and_drifted_ones_rebuilt() {
    let keep = facts(valid("p1"), Some(("active", "running", Some("p1"))));
    assert_eq!(decide(&keep, false), Action::Keep);
    assert_eq!(decide(&keep, true), Action::Keep);
    let drift = facts(valid("p2"), Some(("active", "running", Some("p1"))));
    assert_eq!(
        decide(&drift, false),
        Action::Rebuild {
            live_plan: "p1".into()
        }
    );
}

#[test]
fn units_systemd_is_busy_with_or_that_failed_are_left_alone() {
    for (active, sub) in [
        ("activating", "start"),
        ("activating", "auto-restart"),
        ("deactivating", "stop-sigterm"),
        ("reloading", "reload"),
        ("failed", "failed"),
    ] {
        let f = facts(valid("p2"), Some((active, sub, Some("p1"))));
        assert!(
            matches!(decide(&f, true), Action::Leave { .. }),
            "{active}/{sub}: {:?}",
            decide(&f, true)
        );
    }
}

#[test]
fn autostart_off_and_an_admins_stop_keep_an_agent_down() {
    let off = facts(
        SpecFacts::Valid {
            plan: "p1".into(),
            autostart: false,
        },
        None,
    );
    assert!(
        matches!(decide(&off, false), Action::Leave { reason } if reason.contains("autostart"))
    );
    let mut stopped = facts(valid("p1"), None);
    stopped.stopped_by_admin = true;
    assert!(
        matches!(decide(&stopped, false), Action::Leave { reason } if reason.contains("hivectl stop"))
    );
    // Either way a running agent with a matching unit is simply kept.
    let mut running = facts(valid("p1"), Some(("active", "running", Some("p1"))));
    running.stopped_by_admin = true;
    assert_eq!(decide(&running, false), Action::Keep);
}

#[test]
fn an_agent_without_spec_is_stopped_only_when_pruning() {
    let orphan = facts(SpecFacts::Missing, Some(("active", "running", Some("p1"))));
    assert!(
        matches!(decide(&orphan, false), Action::Leave { reason } if reason.contains("--prune"))
    );
    assert_eq!(decide(&orphan, true), Action::Stop);
    let gone = facts(SpecFacts::Missing, None);
    assert!(matches!(decide(&gone, true), Action::Leave { .. }));
}

#[test]
fn a_foreign_unit_is_never_touched() {
    let foreign = Some(("active", "running", None));
    assert!(matches!(
        decide(&facts(SpecFacts::Missing, foreign), true),
        Action::Leave { .. }
    ));
    assert!(matches!(
        decide(&facts(valid("p1"), foreign), true),
        Action::Refuse { reason } if reason.contains("not made by hyperhive")
    ));
}

#[test]
fn a_refused_spec_is_reported_and_its_units_left_alone() {
    let refused = SpecFacts::Refused("agent alice: bind source /nope: No such file".into());
    for live in [None, Some(("active", "running", Some("p1")))] {
        assert_eq!(
            decide(&facts(refused.clone(), live), true),
            Action::Refuse {
                reason: "agent alice: bind source /nope: No such file".into()
            }
        );
    }
}

#[test]
fn only_creates_rebuilds_and_stops_change_units() {
    assert!(Action::Create.changes_units());
    assert!(Action::Stop.changes_units());
    assert!(Action::Rebuild {
        live_plan: "x".into()
    }
    .changes_units());
    assert!(!Action::Keep.changes_units());
    assert!(!Action::Leave { reason: "".into() }.changes_units());
}

#[test]
fn totals_count_failures_apart() {
    let a = AgentName::parse("a").unwrap();
    let step = |action, result: Option<&str>| Step {
        agent: a.clone(),
        action,
        plan: None,
        result: result.map(Into::into),
    };
    let t = Totals::of(&[
        step(Action::Create, Some("ok")),
        step(Action::Create, Some("failed: boom")),
        step(Action::Keep, None),
        step(Action::Leave { reason: "x".into() }, None),
    ]);
    assert_eq!(
        t,
        Totals {
            created: 1,
            kept: 1,
            left: 1,
            failed: 1,
            ..Totals::default()
        }
    );
}

#[test]
fn a_step_serializes_flat() {
    let s = Step {
        agent: AgentName::parse("bob").unwrap(),
        action: Action::Rebuild {
            live_plan: "p1".into(),
        },
        plan: Some("p2".into()),
        result: None,
    };
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        serde_json::json!({"agent": "bob", "action": "rebuild", "live_plan": "p1", "plan": "p2"})
    );
}
