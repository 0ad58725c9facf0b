//! An agent that is a NixOS system booted from the store (spec `system`), on a real test
//! host. The "system" is a stand-in closure in a stand-in `/nix/store` inside the test
//! host: its `init` makes the usual top-level links and execs the distribution's systemd
//! from the host's `/usr` (bound in by the spec), and its `bin/switch-to-configuration`
//! leaves a marker in `/state`, so a switch in place is observable. A real NixOS toplevel
//! is booted the same way (its `init` is PID 1); that part is the flake's VM test.

use std::process::Output;
use std::time::Instant;

use crate::common::*;

/// The dynamic loader runs the scripts: the root has no `/bin` or `/lib64` until the
/// stand-in's init makes them.
const SHEBANG: &str = "#!/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 /usr/bin/sh";
/// Runs a dynamically linked program before `/lib64` exists.
const LOADER: &str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";

/// Writes a stand-in system `/nix/store/<hash>-standin-<tag>` in the test host and returns
/// its path. `switch_ok = false` makes an activation that fails.
fn standin(h: &TestHost, tag: &str, switch_ok: bool) -> String {
    let dir = format!("/nix/store/{:0>32}-standin-{tag}", tag.len());
    let init = format!(
        "{SHEBANG}\n\
         for l in bin lib lib64 sbin; do [ -e /$l ] || {LOADER} /usr/bin/ln -s usr/$l /$l; done\n\
         echo {tag} > /state/booted-system\n\
         exec /usr/lib/systemd/systemd systemd.firstboot=off \"$@\"\n"
    );
    let switch = if switch_ok {
        format!("{SHEBANG}\necho \"switching to {tag}: $*\"\necho {tag} > /state/switched-to\n")
    } else {
        format!("{SHEBANG}\necho \"activation of {tag} failed on purpose\" >&2\nexit 1\n")
    };
    let script = format!(
        "set -e; mkdir -p {dir}/bin /nix/var/nix/db /nix/var/nix/daemon-socket; \
         cat > {dir}/init <<'EOF'\n{init}EOF\n\
         cat > {dir}/bin/switch-to-configuration <<'EOF'\n{switch}EOF\n\
         chmod 0555 {dir}/init {dir}/bin/switch-to-configuration"
    );
    h.run_ok(&["sh", "-c", &script]);
    dir
}

fn create_system(h: &TestHost, name: &str, system: &str) -> Output {
    let spec = format!("system = \"{system}\"\nbind = [\"/usr:/usr:ro\"]\n");
    h.run_ok(&[
        "sh",
        "-c",
        &format!("cat > /tmp/{name}.toml <<'EOF'\n{spec}EOF"),
    ]);
    let out = h.hivectl(&["create", name, "--spec", &format!("/tmp/{name}.toml")]);
    if !out.status.success() {
        // What the container said, for whoever reads the failure.
        let unit = format!("hive-agent-{name}.service");
        eprintln!(
            "{}",
            String::from_utf8_lossy(
                &h.run(&["journalctl", "-u", &unit, "--no-pager", "-n", "40"])
                    .stdout
            )
        );
    }
    out
}

fn gc_root(h: &TestHost, name: &str) -> String {
    let out = h.run(&[
        "readlink",
        &format!("/nix/var/nix/gcroots/hyperhive/{name}"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Rewrites the saved spec's system, as an admin editing it would.
fn set_system(h: &TestHost, name: &str, system: &str) {
    let spec = format!("/var/lib/hyperhive/agents/{name}/spec.toml");
    h.run_ok(&[
        "sed",
        "-i",
        &format!("s|^system = .*|system = \"{system}\"|"),
        &spec,
    ]);
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_system_agent_boots_from_the_store_and_switches_in_place() {
    let h = hive();
    let one = standin(&h, "one", true);
    let started = Instant::now();
    ok(&create_system(&h, "nix", &one), "create");
    let create_ms = started.elapsed().as_millis();

    // Booted as h-nix, its init as PID 1, the harness connected.
    assert!(
        h.machines().contains(&"h-nix".to_string()),
        "{:?}",
        h.machines()
    );
    h.wait_active("nix");
    assert_eq!(state_file(&h, "nix", "booted-system"), "one");
    assert_eq!(harness_show(&h, "nix", "ActiveState"), "active");
    assert_eq!(
        gc_root(&h, "nix"),
        one,
        "the GC root names the running system"
    );
    let status = h.hivectl_ok(&["status", "nix"]);
    assert!(
        status.contains(&format!(
            "System: {one} (GC root /nix/var/nix/gcroots/hyperhive/nix)"
        )),
        "{status}"
    );
    let exec = h.unit_show("nix", "ExecStart");
    assert!(exec.contains("/nix/var/hyperhive/system/init"), "{exec}");
    assert!(!exec.contains("--boot"), "{exec}");
    assert!(exec.contains("--kill-signal=SIGRTMIN+3"), "{exec}");
    assert!(
        exec.contains("--bind-ro=/nix/store:/nix/store:idmap"),
        "{exec}"
    );
    assert!(exec.contains("--private-users=pick"), "{exec}");
    assert_eq!(h.unit_show("nix", "RestartForceExitStatus"), "133");
    assert_eq!(h.unit_show("nix", "SuccessExitStatus"), "133");
    // Its root is prepared under its state, and the store is read-only inside.
    h.run_ok(&["test", "-d", "/var/lib/hyperhive/agents/nix/root/usr"]);
    let write = h.in_agent("nix", &["sh", "-c", "touch /nix/store/planted"]);
    assert!(!write.status.success(), "the store is writable inside");
    assert!(!h
        .run(&["test", "-e", "/nix/store/planted"])
        .status
        .success());

    // Only the system changes: plan says switch, rebuild switches in place.
    let two = standin(&h, "two", true);
    set_system(&h, "nix", &two);
    let before = h.invocation("nix");
    let harness_before = harness_invocation(&h, "nix");
    let started = Instant::now();
    let rebuilt = h.hivectl(&["rebuild", "nix"]);
    ok(&rebuilt, "rebuild");
    let switch_ms = started.elapsed().as_millis();
    assert_eq!(h.invocation("nix"), before, "a switch keeps the container");
    assert_eq!(state_file(&h, "nix", "switched-to"), "two");
    assert_eq!(gc_root(&h, "nix"), two);
    let status: serde_json::Value =
        serde_json::from_str(&h.hivectl_ok(&["status", "nix", "--json"])).unwrap();
    assert_eq!(status["system"]["running"], two.as_str(), "{status}");
    assert_eq!(harness_show(&h, "nix", "ActiveState"), "active");
    assert_eq!(harness_invocation(&h, "nix"), harness_before);
    wait_entry(
        &h,
        "rebuild_finished with HIVE_OUTCOME=switched",
        &[
            "HIVE_EVENT=rebuild_finished",
            "HIVE_AGENT=nix",
            "HIVE_OUTCOME=switched",
        ],
    );

    // A changed system in the spec: plan says switch, reload switches in place.
    let three = standin(&h, "three", true);
    set_system(&h, "nix", &three);
    let plan = h.hivectl_ok(&["plan", "nix"]);
    assert!(
        plan.contains(&format!(
            "nix: switch hive-agent-nix.service in place (no restart): system {two} -> {three}"
        )),
        "{plan}"
    );
    h.hivectl_ok(&["reload"]);
    assert_eq!(
        h.invocation("nix"),
        before,
        "reload switches, never restarts"
    );
    assert_eq!(state_file(&h, "nix", "switched-to"), "three");
    assert_eq!(gc_root(&h, "nix"), three);
    assert!(h.hivectl_ok(&["plan", "nix"]).contains("nix: keep:"));
    let two = three;

    // A broken new system: a one-line error, the old one keeps running and stays rooted.
    let broken = standin(&h, "broken", false);
    set_system(&h, "nix", &broken);
    let out = h.hivectl(&["rebuild", "nix"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("switching container h-nix to"), "{err}");
    assert!(err.contains("hive-switch.service"), "{err}");
    assert_eq!(
        h.invocation("nix"),
        before,
        "a failed switch keeps the container"
    );
    assert_eq!(
        gc_root(&h, "nix"),
        two,
        "a failed switch leaves the GC root"
    );
    assert_eq!(state_file(&h, "nix", "switched-to"), "three");
    // The activation's output is in the container's journal.
    let log = h.run_ok(&[
        "journalctl",
        "-M",
        "h-nix",
        "-u",
        "hive-switch.service",
        "--no-pager",
    ]);
    assert!(
        log.contains("activation of broken failed on purpose"),
        "{log}"
    );

    // Purge removes the GC root.
    set_system(&h, "nix", &two);
    h.hivectl_ok(&["destroy", "nix", "--purge"]);
    assert_eq!(gc_root(&h, "nix"), "");
    // The same measure for a root agent (an ephemeral copy of the host), on the same host.
    let started = Instant::now();
    h.create("base", &[]);
    let root_ms = started.elapsed().as_millis();
    eprintln!(
        "figures: create (boot to harness connected) of a system agent {create_ms} ms, \
         of a root agent {root_ms} ms; rebuild as a switch in place {switch_ms} ms"
    );
}

#[test]
fn an_agent_cannot_change_its_system_nor_redirect_the_daemon() {
    let h = hive();
    let one = standin(&h, "one", true);
    h.hivectl_ok(&["create", "eve", "--system", &one, "--bind", "/usr:/usr:ro"]);
    h.wait_active("eve");

    // It may not ask for another system.
    let ask = h.in_agent(
        "eve",
        &[
            "/opt/hyperhive/bin/hive-harness",
            "request-approval",
            "spec_change",
            "{\"system\":\"/nix/store/00000000000000000000000000000000-evil\"}",
        ],
    );
    assert_eq!(ask.status.code(), Some(2), "{}", stderr(&ask));
    assert!(
        stderr(&ask).contains("may not be requested"),
        "{}",
        stderr(&ask)
    );

    // The running system and the host's GC roots are out of its reach.
    let tries = h.in_agent(
        "eve",
        &[
            "sh",
            "-c",
            "touch /nix/var/hyperhive/system/x; echo > /nix/var/hyperhive/system/init; \
             ls /nix/var/nix/gcroots/hyperhive; exit 0",
        ],
    );
    assert!(tries.status.success());
    assert!(!h.run(&["test", "-e", &format!("{one}/x")]).status.success());
    assert_eq!(gc_root(&h, "eve"), one);
    let init = h.run_ok(&["cat", &format!("{one}/init")]);
    assert!(init.contains("exec /usr/lib/systemd/systemd"), "{init}");

    // What it leaves in its root is never followed when the daemon prepares the root
    // again: a link where the daemon makes usr/ (planted while stopped, as an agent
    // could leave it) leads nowhere on the host.
    h.hivectl_ok(&["stop", "eve"]);
    let root = "/var/lib/hyperhive/agents/eve/root";
    h.run_ok(&[
        "sh",
        "-c",
        &format!("rm -rf {root}/usr && ln -s /tmp/h23-planted {root}/usr"),
    ]);
    let _ = h.hivectl(&["start", "eve"]);
    assert!(
        !h.run(&["test", "-e", "/tmp/h23-planted"]).status.success(),
        "the daemon followed a link in the agent's root"
    );
}

#[test]
fn bad_system_specs_are_refused_and_touch_nothing() {
    let h = hive();
    let one = standin(&h, "one", true);
    for (spec, want) in [
        (
            format!("root = \"/\"\nsystem = \"{one}\"\n"),
            "root and system are both set",
        ),
        (
            "system = \"/nix/store/00000000000000000000000000000000-missing\"\n".to_string(),
            "system /nix/store/00000000000000000000000000000000-missing/init: No such file",
        ),
        (
            format!("system = \"{one}\"\nbind = [\"/srv:/nix/store\"]\n"),
            "bound by hyperhive for a system agent",
        ),
    ] {
        h.run_ok(&[
            "sh",
            "-c",
            &format!("cat > /tmp/bad.toml <<'EOF'\n{spec}EOF"),
        ]);
        let out = h.hivectl(&["create", "bad", "--spec", "/tmp/bad.toml"]);
        assert_bad_input(&out, want);
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
        assert!(!h
            .run(&["test", "-e", "/var/lib/hyperhive/agents/bad"])
            .status
            .success());
        assert_eq!(gc_root(&h, "bad"), "");
    }
}
