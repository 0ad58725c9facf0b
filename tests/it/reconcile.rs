//! Specs are the truth (issue 8), on a real systemd: a reboot of the test host (state and
//! config dirs kept on the machine's side) brings every autostart agent back exactly once;
//! an edited spec is rebuilt by reload and no other agent is touched; `hivectl plan` shows
//! the diff before and none after, and refuses what cannot work in one line. The oracle is
//! `systemctl show`, `journalctl -o json` and machinectl inside the test host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// systemd's "Started unit" entry (JOB_TYPE=start, JOB_RESULT=done).
const UNIT_STARTED: &str = "MESSAGE_ID=39f53479d3a045ac8e11786248231fbf";

/// The machine-side directories bound over the test host's state and config roots, so
/// they outlive a reboot as a real disk would.
struct Disk {
    _dir: tempfile::TempDir,
    state: PathBuf,
    config: PathBuf,
}

impl Disk {
    fn new() -> Disk {
        // Under /var/tmp, not /tmp: test hosts get their own /tmp.
        let dir = tempfile::Builder::new()
            .prefix("hh-reconcile-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let state = dir.path().join("state");
        let config = dir.path().join("config");
        std::fs::create_dir_all(config.join("agents")).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        Disk {
            _dir: dir,
            state,
            config,
        }
    }

    fn boot(&self) -> TestHost {
        TestHost::boot(Options {
            bin_dir: Some(bin_dir()),
            units_dir: Some(units_dir()),
            start_daemon: true,
            extra_binds: vec![
                (self.state.clone(), "/var/lib/hyperhive".into()),
                (self.config.clone(), "/etc/hyperhive".into()),
            ],
            ..Default::default()
        })
        .expect("booting the test host")
    }

    /// Writes `/etc/hyperhive/agents/<name>.toml`, as the NixOS module would.
    fn declare(&self, name: &str, extra: &str) {
        std::fs::write(
            self.config.join("agents").join(format!("{name}.toml")),
            format!("root = \"/\"\nvolatile = \"yes\"\n{extra}"),
        )
        .unwrap();
    }

    fn undeclare(&self, name: &str) {
        std::fs::remove_file(self.config.join("agents").join(format!("{name}.toml"))).unwrap();
    }
}

/// Waits for the reconcile the daemon runs at its start to finish, and returns its entry.
fn startup_reconcile(h: &TestHost) -> Value {
    wait_entry(
        h,
        "the startup reconcile",
        &["HIVE_EVENT=reconcile_finished", "HIVE_TRIGGER=startup"],
    )
}

fn json(h: &TestHost, args: &[&str]) -> Vec<Value> {
    let out = h.hivectl_ok(args);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("hivectl {args:?}: {e}: {out}"))
        .as_array()
        .unwrap()
        .clone()
}

/// `agent -> action` of a plan or reload.
fn actions(items: &[Value]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|i| {
            (
                i["agent"].as_str().unwrap().to_owned(),
                i["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn unit_loaded(h: &TestHost, name: &str) -> bool {
    h.unit_show(name, "LoadState") == "loaded"
}

#[test]
fn a_reboot_brings_every_autostart_agent_back_exactly_once() {
    let disk = Disk::new();
    {
        let h = disk.boot();
        // One agent made by hivectl create (its spec saved under the state root), one
        // declared (as the NixOS module writes it), one declared with autostart off.
        h.create("made", &[]);
        disk.declare("declared", "");
        disk.declare("manual", "autostart = false\n");
        let steps = json(&h, &["reload", "--json"]);
        assert_eq!(
            actions(&steps),
            pairs(&[
                ("declared", "create"),
                ("made", "keep"),
                ("manual", "leave")
            ])
        );
        h.wait_active("declared");
        assert!(!unit_loaded(&h, "manual"));
        // Torn down here, like a power cut: nothing is stopped cleanly.
    }

    let h = disk.boot();
    let done = startup_reconcile(&h);
    assert_eq!(done["HIVE_CREATED"], "2", "{done}");
    assert_eq!(done["HIVE_FAILED"], "0", "{done}");
    eprintln!(
        "two agents back after the reboot in {} ms (reconcile)",
        done["HIVE_DURATION_MS"]
    );
    for name in ["made", "declared"] {
        h.wait_active(name);
        let created = entries(
            &h,
            &[
                "HIVE_EVENT=agent_created",
                &format!("HIVE_AGENT={name}"),
                "HIVE_TRIGGER=startup",
            ],
        );
        assert_eq!(created.len(), 1, "{name}: {created:?}");
        assert_eq!(created[0]["HIVE_OUTCOME"], "created");
        let unit = format!("hive-agent-{name}.service");
        let started = entries(&h, &[&format!("UNIT={unit}"), UNIT_STARTED]);
        assert_eq!(started.len(), 1, "{name} was started once: {started:?}");
        assert_eq!(h.unit_show(name, "NRestarts"), "0");
        // The harness came back too, connected to its socket.
        h.wait_for(
            &format!("{name}'s harness connected"),
            Duration::from_secs(30),
            || connections(&h, name) == 1,
        );
        assert_eq!(listeners(&h, name), 1);
    }
    assert!(!unit_loaded(&h, "manual"), "autostart off stays down");
    assert_eq!(
        h.machines().len(),
        2,
        "one machine per agent: {:?}",
        h.machines()
    );

    // A daemon restart now adopts both and restarts neither.
    let before: Vec<String> = ["made", "declared"].map(|n| h.invocation(n)).to_vec();
    h.run_ok(&["systemctl", "restart", "hive-c0re"]);
    h.wait_for(
        "a second startup reconcile",
        Duration::from_secs(30),
        || {
            entries(
                &h,
                &["HIVE_EVENT=reconcile_finished", "HIVE_TRIGGER=startup"],
            )
            .len()
                == 2
        },
    );
    let again = entries(
        &h,
        &["HIVE_EVENT=reconcile_finished", "HIVE_TRIGGER=startup"],
    )
    .pop()
    .unwrap();
    assert_eq!(
        (again["HIVE_CREATED"].as_str(), again["HIVE_KEPT"].as_str()),
        (Some("0"), Some("2")),
        "{again}"
    );
    let after: Vec<String> = ["made", "declared"].map(|n| h.invocation(n)).to_vec();
    assert_eq!(before, after);
    assert_eq!(
        entries(&h, &["HIVE_EVENT=adopted", "HIVE_AGENT=made"]).len(),
        1,
        "adopted once, by the restarted daemon"
    );
}

#[test]
fn reload_rebuilds_only_the_edited_agent_and_plan_shows_the_diff_before_and_none_after() {
    let disk = Disk::new();
    let h = disk.boot();
    startup_reconcile(&h);
    disk.declare("one", "");
    disk.declare("two", "");
    json(&h, &["reload", "--json"]);
    h.wait_active("one");
    h.wait_active("two");
    let one = h.invocation("one");
    let two = h.invocation("two");

    disk.declare("two", "memory_max = \"512M\"\n[env]\nMOOD = \"edited\"\n");
    let plan = json(&h, &["plan", "--all", "--json"]);
    assert_eq!(
        actions(&plan),
        pairs(&[("one", "keep"), ("two", "rebuild")])
    );
    let diff = plan[1]["diff"].as_array().unwrap();
    let changed: Vec<&str> = diff
        .iter()
        .map(|d| d["property"].as_str().unwrap())
        .collect();
    assert!(changed.contains(&"MemoryMax"), "{diff:?}");
    // The env is the harness unit's (never a host command line): the container's plan
    // hash, which covers the harness's plan, is what changes on the host unit.
    assert!(
        changed.contains(&"Environment") && !changed.contains(&"ExecStart"),
        "MOOD=edited: {diff:?}"
    );
    let mem = diff.iter().find(|d| d["property"] == "MemoryMax").unwrap();
    assert_eq!(mem["planned"], "536870912");
    // The human form says the same.
    let text = h.hivectl_ok(&["plan", "two"]);
    assert!(
        text.starts_with("two: rebuild hive-agent-two.service"),
        "{text}"
    );
    assert!(
        text.contains("~ MemoryMax") && text.contains("+ 536870912"),
        "{text}"
    );
    assert_eq!(h.invocation("two"), two, "plan touches nothing");

    let steps = json(&h, &["reload", "--json"]);
    assert_eq!(
        actions(&steps),
        pairs(&[("one", "keep"), ("two", "rebuild")])
    );
    assert_eq!(steps[1]["result"], "ok");
    assert_eq!(h.invocation("one"), one, "the other agent was not touched");
    assert_ne!(h.invocation("two"), two);
    assert_eq!(h.unit_show("two", "MemoryMax"), "536870912");
    let harness_env = h.run_ok(&[
        "systemctl",
        "-M",
        "h-two",
        "show",
        "-p",
        "Environment",
        "--value",
        "hive-harness.service",
    ]);
    assert!(harness_env.contains("MOOD=edited"), "{harness_env}");
    let rebuilt = entries(
        &h,
        &[
            "HIVE_EVENT=rebuild_finished",
            "HIVE_TRIGGER=reload",
            "HIVE_AGENT=two",
        ],
    );
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    assert!(entries(&h, &["HIVE_EVENT=rebuild_started", "HIVE_AGENT=one"]).is_empty());

    let plan = json(&h, &["plan", "--all", "--json"]);
    assert_eq!(actions(&plan), pairs(&[("one", "keep"), ("two", "keep")]));
    assert!(plan
        .iter()
        .all(|p| p["diff"].as_array().unwrap().is_empty()));

    // SIGHUP and `systemctl reload hive-c0re` reconcile too; with nothing to change,
    // nothing restarts.
    h.run_ok(&[
        "systemctl",
        "kill",
        "-s",
        "HUP",
        "--kill-whom=main",
        "hive-c0re",
    ]);
    wait_entry(
        &h,
        "the SIGHUP reconcile",
        &["HIVE_EVENT=reconcile_finished", "HIVE_TRIGGER=sighup"],
    );
    disk.declare("one", "cpu_weight = 50\n");
    h.run_ok(&["systemctl", "reload", "hive-c0re"]);
    assert_eq!(h.unit_show("one", "CPUWeight"), "50");
    assert_eq!(h.show("hive-c0re.service", "ActiveState"), "active");
}

#[test]
fn plan_and_reload_refuse_a_missing_bind_source_in_one_line_and_touch_nothing() {
    let disk = Disk::new();
    let h = disk.boot();
    startup_reconcile(&h);
    disk.declare("bad", "bind = [\"/srv/gone:/data\"]\n");

    let out = h.hivectl(&["plan", "bad"]);
    assert_bad_input(&out, "plan with a missing bind source");
    assert_eq!(
        stderr(&out),
        "hivectl: agent bad: bind source /srv/gone: No such file or directory"
    );
    let out = h.hivectl(&["reload"]);
    assert_bad_input(&out, "reload with a missing bind source");
    assert!(!unit_loaded(&h, "bad"), "nothing was created");
    assert!(!Path::new(&disk.state.join("agents/bad")).exists());

    let out = h.hivectl(&["plan", "nobody"]);
    assert_bad_input(&out, "plan of an unknown agent");
    assert!(stderr(&out).contains("no agent nobody"), "{}", stderr(&out));
    let out = h.hivectl(&["plan", "Bad/Name"]);
    assert_bad_input(&out, "plan of a bad name");
}

#[test]
fn a_stop_outlives_a_daemon_restart_and_only_prune_stops_an_agent_without_spec() {
    let disk = Disk::new();
    let h = disk.boot();
    startup_reconcile(&h);
    h.create("held", &[]);
    disk.declare("orphan", "");
    json(&h, &["reload", "--json"]);
    h.wait_active("orphan");

    h.hivectl_ok(&["stop", "held"]);
    h.run_ok(&["systemctl", "restart", "hive-c0re"]);
    h.wait_for(
        "the restarted daemon's reconcile",
        Duration::from_secs(30),
        || {
            entries(
                &h,
                &["HIVE_EVENT=reconcile_finished", "HIVE_TRIGGER=startup"],
            )
            .len()
                == 2
        },
    );
    assert!(!unit_loaded(&h, "held"), "hivectl stop stands");
    let plan = json(&h, &["plan", "held", "--json"]);
    assert_eq!(plan[0]["action"], "leave");
    assert!(plan[0]["reason"].as_str().unwrap().contains("hivectl stop"));

    let orphan = h.invocation("orphan");
    disk.undeclare("orphan");
    let steps = json(&h, &["reload", "--json"]);
    let orphan_step = steps.iter().find(|s| s["agent"] == "orphan").unwrap();
    assert_eq!(orphan_step["action"], "leave", "{orphan_step}");
    assert_eq!(h.invocation("orphan"), orphan, "no prune, no stop");
    let steps = json(&h, &["reload", "--prune", "--json"]);
    let orphan_step = steps.iter().find(|s| s["agent"] == "orphan").unwrap();
    assert_eq!(
        (&orphan_step["action"], &orphan_step["result"]),
        (&Value::from("stop"), &Value::from("ok"))
    );
    assert_eq!(h.unit_show("orphan", "ActiveState"), "inactive");
    assert!(
        disk.state.join("agents/orphan/state").is_dir(),
        "pruning keeps the agent's state"
    );

    h.hivectl_ok(&["start", "held"]);
    h.wait_active("held");
    let plan = json(&h, &["plan", "held", "--json"]);
    assert_eq!(plan[0]["action"], "keep");
}
