//! `hivectl create` never clobbers an agent: the same spec again is a no-op (same
//! InvocationID), another spec is refused with the differences and the agent and its spec
//! file are left as they were, `--replace` replaces. Nothing an approval applied is
//! dropped unless the admin asks for exactly that. Oracle: systemctl show, the spec file.

use std::time::Duration;

use crate::common::*;

const SPEC: &str = "/var/lib/hyperhive/agents/bob/spec.toml";

/// A stand-in for claude that asks for /opt/approved/bin on its PATH until it has it.
const ASKING: &str = r#"case ":$PATH:" in
  *:/opt/approved/bin:*) ;;
  *) hive-harness request-approval spec_change '{"path":["/opt/approved/bin"]}' > /state/requested ;;
esac
exec sleep infinity"#;

fn bob_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "create",
        "bob",
        "--root",
        "/",
        "--volatile",
        "yes",
        "--cpu-weight",
        "50",
        "--path",
        "/opt/x/bin",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn the_same_spec_again_is_a_no_op() {
    let h = hive();
    h.hivectl_ok(&bob_args(&[]));
    let (id, harness) = (h.invocation("bob"), harness_invocation(&h, "bob"));
    let spec = h.run_ok(&["cat", SPEC]);

    let out = h.hivectl_ok(&bob_args(&[]));
    assert!(
        out.contains("unchanged") && out.contains("already has this spec"),
        "{out}"
    );
    assert_eq!(h.invocation("bob"), id, "not restarted");
    assert_eq!(harness_invocation(&h, "bob"), harness);
    assert_eq!(h.run_ok(&["cat", SPEC]), spec);
    assert_eq!(h.unit_show("bob", "NRestarts"), "0");
}

#[test]
fn another_spec_is_refused_with_the_differences_and_touches_nothing() {
    let h = hive();
    h.hivectl_ok(&bob_args(&[]));
    let id = h.invocation("bob");
    let spec = h.run_ok(&["cat", SPEC]);

    // What the issue's admin typed: the ephemeral-host flags only.
    let out = h.hivectl(&["create", "bob", "--root", "/", "--volatile", "yes"]);
    assert_bad_input(&out, "create over a different spec");
    let err = stderr(&out);
    for part in [
        "agent bob exists with another spec",
        "cpu_weight: 50 → unset",
        "path: [\"/opt/x/bin\"] → unset",
        "nothing changed",
        "--replace",
        "hivectl rebuild bob",
        SPEC,
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert_eq!(h.run_ok(&["cat", SPEC]), spec, "spec file unchanged");
    assert_eq!(h.invocation("bob"), id, "agent untouched");
    assert_eq!(h.unit_show("bob", "CPUWeight"), "50");

    // --replace is the admin asking for exactly that.
    let out = h.hivectl_ok(&[
        "create",
        "bob",
        "--root",
        "/",
        "--volatile",
        "yes",
        "--replace",
    ]);
    assert!(out.contains("replaced"), "{out}");
    assert_ne!(h.invocation("bob"), id);
    let spec = h.run_ok(&["cat", SPEC]);
    assert!(
        !spec.contains("cpu_weight") && !spec.contains("/opt/x/bin"),
        "{spec}"
    );
    assert_ne!(h.unit_show("bob", "CPUWeight"), "50");
}

#[test]
fn what_an_approval_applied_survives_a_create_with_the_old_flags() {
    let h = hive();
    h.create("carol", &["--harness", "sh", "-c", ASKING]);
    let mut id = String::new();
    h.wait_for("carol's request", Duration::from_secs(15), || {
        id = state_file(&h, "carol", "requested");
        !id.is_empty()
    });
    let out = h.hivectl_ok(&["approve", &id]);
    assert!(out.contains("applied"), "{out}");
    let spec_path = "/var/lib/hyperhive/agents/carol/spec.toml";
    let spec = h.run_ok(&["cat", spec_path]);
    assert!(spec.contains("/opt/approved/bin"), "{spec}");
    let inv = h.invocation("carol");

    // The admin re-runs the create line from their shell history.
    let out = h.hivectl(&[
        "create",
        "carol",
        "--root",
        "/",
        "--volatile",
        "yes",
        "--harness",
        "sh",
        "-c",
        ASKING,
    ]);
    assert_bad_input(&out, "create over an approved change");
    let err = stderr(&out);
    assert!(
        err.contains("path: [\"/opt/approved/bin\"] → unset"),
        "{err}"
    );
    assert_eq!(h.run_ok(&["cat", spec_path]), spec);
    assert_eq!(h.invocation("carol"), inv);
}
