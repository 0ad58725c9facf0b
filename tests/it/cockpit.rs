//! The Cockpit page (cockpit/hyperhive/) in a real browser against a real hive: Debian's
//! cockpit-ws and cockpit-bridge run inside the test host as a unit (loopback only), the
//! page is opened in headless Chromium (tests/it/browser.rs) and every claim is checked
//! twice: in the page's DOM and in what systemd and hyperhive say (systemctl show,
//! hivectl). One test host and one browser for the whole story, Chromium being heavy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::browser::{chromium, Browser};
use crate::cockpit_ws::{fresh_session, open, repo, start_cockpit, COCKPIT_WS};
use crate::common::*;

/// alice asks once for /opt/approved/bin on her PATH.
const ALICE: &str = r#"echo "$PATH" > /state/path
case ":$PATH:" in
  *:/opt/approved/bin:*) ;;
  *) [ -s /state/requested ] || hive-harness request-approval spec_change '{"path":["/opt/approved/bin"]}' > /state/requested ;;
esac
exec sleep infinity"#;

/// bob is hostile: he asks once for a path that is markup, hoping the page renders it as
/// HTML and runs his script as the admin (whose bridge may act as root).
const BOB: &str = r#"[ -s /state/requested ] || hive-harness request-approval spec_change '{"path":["/opt/<img src=x onerror=window.pwned=1>/bin"]}' > /state/requested
exec sleep infinity"#;

/// The agent rows as the page shows them.
fn rows(b: &mut Browser) -> Vec<Value> {
    let v = b.eval(
        "Array.from(document.querySelectorAll('#agents-body tr')).map(r => ({
            name: r.getAttribute('data-agent'),
            active: r.querySelector('.hh-state').getAttribute('data-active'),
            sub: r.querySelector('.hh-state').getAttribute('data-sub'),
            restarts: r.querySelector('.hh-restarts').textContent,
            crash: r.querySelector('.hh-crash').textContent}))",
    );
    v.as_array().unwrap().clone()
}

fn go(b: &mut Browser, path: &str) {
    b.eval(&format!("cockpit.location.go('{path}'), true"));
}

fn asked(h: &TestHost, agent: &str) -> i64 {
    let mut id = String::new();
    h.wait_for(
        &format!("{agent}'s request"),
        Duration::from_secs(15),
        || {
            id = state_file(h, agent, "requested");
            !id.is_empty()
        },
    );
    id.parse().expect("request-approval prints the id")
}

fn approval_status(h: &TestHost, id: i64) -> Value {
    let all: Value =
        serde_json::from_str(&h.hivectl_ok(&["approvals", "--all", "--json"])).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("approval {id} missing"))
}

fn screenshot(b: &mut Browser, name: &str) {
    let to = repo().join("docs/img").join(name);
    b.screenshot(&to);
    eprintln!("cockpit: screenshot {}", to.display());
}

/// Whether the machine has what this test drives (scripts/ensure-deps.sh installs it).
fn browser_and_cockpit(h: &TestHost) -> PathBuf {
    let ws = format!("/proc/{}/root{COCKPIT_WS}", h.leader());
    assert!(
        Path::new(&ws).exists(),
        "{COCKPIT_WS} is missing in the test host's tree: apt-get install cockpit-ws cockpit-bridge cockpit-system (scripts/ensure-deps.sh)"
    );
    chromium().expect("chromium is missing: apt-get install chromium (scripts/ensure-deps.sh)")
}

/// The Debian 13 tree the 257 side boots is built from a fixed package list
/// (testhost/src/os.rs) that has no Cockpit: there this test says so and does nothing.
fn cockpit_in_debian13_tree() -> bool {
    match testhost::HostOs::from_env() {
        Ok(testhost::HostOs::Debian13) => Path::new(testhost::os::DEBIAN13_TREE)
            .join(COCKPIT_WS.trim_start_matches('/'))
            .exists(),
        _ => true,
    }
}

#[test]
fn the_page_shows_agents_live_and_decides_approvals_as_the_bus_allows() {
    if !cockpit_in_debian13_tree() {
        eprintln!(
            "cockpit: SKIPPED on debian13: its test tree has no cockpit-ws (not in testhost/src/os.rs PACKAGES)"
        );
        return;
    }
    let h = hive();
    let chromium = browser_and_cockpit(&h);
    h.create("alice", &["--harness", "sh", "-c", ALICE]);
    h.create("bob", &["--harness", "sh", "-c", BOB]);
    let alice_id = asked(&h, "alice");
    let bob_id = asked(&h, "bob");
    let port = start_cockpit(&h, "cockpit-root", None, "/root");
    let mut b = Browser::launch(&chromium);

    // Both agents, with the states systemd holds.
    open(&mut b, port, "/");
    b.wait(
        "alice and bob listed as active",
        Duration::from_secs(20),
        "document.querySelectorAll('#agents-body tr .hh-state[data-active=active]').length == 2",
    );
    let listed = rows(&mut b);
    let names: Vec<&str> = listed.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);
    for r in &listed {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["active"], h.unit_show(name, "ActiveState"), "{r}");
        assert_eq!(r["sub"], h.unit_show(name, "SubState"), "{r}");
        assert_eq!(r["restarts"], h.unit_show(name, "NRestarts"), "{r}");
    }

    // kill -9 of bob's container: the page shows the crash and the restart from the bus
    // and the journal, without a reload (the marker set in this page survives).
    b.eval("window.hhMarker = 'no reload', true");
    kill_container_and_await_restart(&h, "bob");
    let restarts = h.unit_show("bob", "NRestarts");
    assert_eq!(restarts, "1");
    b.wait(
        "bob's crash and restart on the page",
        Duration::from_secs(20),
        "(() => { const r = document.querySelector('#agents-body tr[data-agent=bob]');
            return r.querySelector('.hh-restarts').textContent == '1'
                && r.querySelector('.hh-crash').textContent.includes('killed by signal 9/KILL')
                && r.querySelector('.hh-state').getAttribute('data-active') == 'active' })()",
    );
    assert_eq!(b.eval("window.hhMarker"), "no reload");
    // The harness hive-c0re gives the restarted container shows up too.
    b.wait(
        "bob's new harness running on the page",
        Duration::from_secs(20),
        "document.querySelector('#agents-body tr[data-agent=bob] .hh-harness').textContent.startsWith('active (running)')",
    );
    screenshot(&mut b, "cockpit-agents.png");

    // bob's page: hivectl status's own text, the journal with systemd's lines about the kill.
    go(&mut b, "/agent/bob");
    b.wait(
        "bob's status and journal",
        Duration::from_secs(20),
        "document.getElementById('agent-status').textContent.includes('Restarts: 1')
            && document.getElementById('agent-status').textContent.includes('killed by signal 9/KILL')
            && document.getElementById('agent-journal').textContent.includes('hive-agent-bob.service')
            && document.getElementById('agent-spec').textContent.includes('harness')",
    );
    screenshot(&mut b, "cockpit-agent.png");
    // The command box runs in bob's container (its hostname is the machine name).
    b.eval(
        "document.getElementById('agent-run-cmd').value = 'hostname';
         document.querySelector('#agent-run button').click(), true",
    );
    b.wait(
        "hostname run in bob's container",
        Duration::from_secs(20),
        "document.getElementById('agent-run-out').textContent.includes('h-bob')",
    );

    // Approvals: alice's request with its diff, bob's markup shown as text, never run.
    go(&mut b, "/approvals");
    let card = format!("#pending-list [data-approval=\"{alice_id}\"]");
    b.wait(
        "alice's request with its spec and unit diff",
        Duration::from_secs(20),
        &format!(
            "(() => {{ const c = document.querySelector('{card}');
                return c && c.querySelector('.hh-spec-diff')
                    && c.querySelector('.hh-spec-diff').textContent.includes('/opt/approved/bin')
                    && c.querySelector('.hh-unit-diff')
                    && c.querySelector('.hh-unit-diff').textContent.includes('Environment') }})()"
        ),
    );
    let bob_card = format!("#pending-list [data-approval=\"{bob_id}\"]");
    b.wait(
        "bob's request as text",
        Duration::from_secs(20),
        &format!(
            "document.querySelector('{bob_card} .hh-payload').textContent.includes('<img src=x')"
        ),
    );
    assert_eq!(
        b.eval(
            "[window.pwned === undefined, document.querySelectorAll('#pending-list img').length]"
        ),
        serde_json::json!([true, 0]),
        "an agent's request must never become markup in the admin's page"
    );
    screenshot(&mut b, "cockpit-approval.png");

    // Approve from the page: the unit changes as systemctl show says, the row moves.
    let env_before = h.unit_show("alice", "Environment");
    assert!(!env_before.contains("/opt/approved/bin"), "{env_before}");
    b.eval(&format!(
        "document.querySelector('{card} .hh-note').value = 'approved in the browser';
         document.querySelector('{card} .hh-approve').click(), true"
    ));
    b.wait(
        "alice's approval decided on the page",
        Duration::from_secs(60),
        &format!(
            "!document.querySelector('{card}')
                && document.querySelector('#decided-body tr[data-approval=\"{alice_id}\"]')
                && document.querySelector('#decided-body tr[data-approval=\"{alice_id}\"]').getAttribute('data-status') == 'applied'"
        ),
    );
    let env = h.unit_show("alice", "Environment");
    assert!(env.contains("/opt/approved/bin"), "{env}");
    assert!(
        env.contains(&format!("HIVE_APPROVAL_ID={alice_id}")),
        "{env}"
    );
    let decided = approval_status(&h, alice_id);
    assert_eq!(decided["status"], "applied");
    assert_eq!(decided["note"], "approved in the browser");
    assert_eq!(decided["decided_by"], "uid 0");

    // A user outside hive-admin (viewer): the page says what the bus refused; nothing changes.
    let bob_invocation = h.invocation("bob");
    // Cockpit's bridge takes its home from passwd, so the user gets a real one.
    h.run_ok(&[
        "sh",
        "-c",
        "echo 'viewer:x:1002:1002::/run/viewer:/bin/sh' >> /etc/passwd && \
         echo 'viewer:x:1002:' >> /etc/group && mkdir -p /run/viewer && \
         ! id -nG viewer | grep -qw hive-admin",
    ]);
    let viewer_port = start_cockpit(&h, "cockpit-viewer", Some("viewer"), "/run/viewer");
    open(&mut b, viewer_port, "/approvals");
    let refusal = b.wait(
        "the refusal for viewer",
        Duration::from_secs(20),
        "!document.getElementById('approvals-refused').hidden
            && document.getElementById('approvals-refused').textContent",
    );
    let refusal = refusal.as_str().unwrap();
    assert!(
        refusal.contains("only root and members of the hive-admin group"),
        "{refusal}"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#pending-list [data-approval]').length"),
        0
    );
    // The same page's bus connection tries anyway: approve bob's request, stop bob.
    let tried = b.eval(&format!(
        "hh.call('Approve', [{bob_id}, 'from viewer']).then(() => 'approved', e => e.name)"
    ));
    assert!(tried.as_str().unwrap().ends_with("AccessDenied"), "{tried}");
    // Agent verbs are root's: the buttons are off, and a call made anyway is refused.
    go(&mut b, "/");
    b.wait(
        "bob listed for viewer, his Stop button off",
        Duration::from_secs(20),
        "document.querySelector('#agents-body tr[data-agent=bob] button[data-verb=Stop]:disabled')",
    );
    let tried = b.eval("hh.call('StopAgent', ['bob']).then(() => 'stopped', e => e.name)");
    assert!(tried.as_str().unwrap().ends_with("AccessDenied"), "{tried}");
    assert_eq!(approval_status(&h, bob_id)["status"], "pending");
    assert_eq!(h.invocation("bob"), bob_invocation, "bob was not stopped");
    assert_eq!(h.unit_show("bob", "ActiveState"), "active");

    // Back as root: deny bob's request from the page; the record says so, bob is untouched.
    fresh_session(&h, "cockpit-root", port);
    open(&mut b, port, "/approvals");
    b.eval(&format!(
        "document.querySelector('{bob_card} .hh-note').value = 'no markup paths';
         document.querySelector('{bob_card} .hh-deny').click(), true"
    ));
    b.wait(
        "bob's request denied on the page",
        Duration::from_secs(30),
        &format!(
            "!document.querySelector('{bob_card}')
                && document.querySelector('#decided-body tr[data-approval=\"{bob_id}\"][data-status=denied]')"
        ),
    );
    let denied = approval_status(&h, bob_id);
    assert_eq!(denied["status"], "denied");
    assert_eq!(denied["note"], "no markup paths");
    assert_eq!(h.invocation("bob"), bob_invocation, "deny rebuilt nothing");

    load_time_with_many_agents_and_approvals(&h, &mut b, port);
}

/// Page load with 50 agents and 10,000 decided approvals: the 48 more "agents" are real
/// transient hive-agent-*.service units (a sleep, not a container: systemd and the page
/// treat them alike), the approvals real rows of the daemon's store.
fn load_time_with_many_agents_and_approvals(h: &TestHost, b: &mut Browser, port: u16) {
    for i in 0..48 {
        let unit = format!("hive-agent-load{i:02}.service");
        h.run_ok(&[
            "systemd-run",
            "--unit",
            &unit,
            "--slice",
            "hive.slice",
            "sleep",
            "infinity",
        ]);
    }
    h.run_ok(&[
        "sqlite3",
        "/var/lib/hyperhive/hive.sqlite",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
         INSERT INTO approvals (agent, kind, payload, status, note, decided_by, created_at, decided_at, finished_at)
         SELECT 'load' || (i % 48), 'spec_change', '{\"path\":[\"/opt/x\"]}', 'denied', 'load test', 'uid 0',
                1700000000000000 + i, 1700000000000000 + i, 1700000000000000 + i FROM n",
    ]);
    let all: Value =
        serde_json::from_str(&h.hivectl_ok(&["approvals", "--all", "--json"])).unwrap();
    assert!(all.as_array().unwrap().len() >= 10_000);
    let mut best = u64::MAX;
    for _ in 0..3 {
        fresh_session(h, "cockpit-root", port);
        let started = Instant::now();
        let page_ms = open(b, port, "/");
        let wall = started.elapsed();
        let agents = b.eval("document.querySelectorAll('#agents-body tr').length");
        let decided = b.eval("document.querySelectorAll('#decided-body tr').length");
        assert_eq!(agents, 50);
        // The first page: 100 rows of which bob's pending one is left out.
        assert!(decided.as_u64().unwrap() >= 99, "{decided}");
        let parts = b.eval(
            "[document.body.getAttribute('data-agents-ms'), document.body.getAttribute('data-approvals-ms')]",
        );
        eprintln!(
            "cockpit: page load with 50 agents and 10,000 decided approvals: {page_ms} ms (page; agents, approvals at {parts}), {} ms (browser wall, navigate to rendered)",
            wall.as_millis()
        );
        best = best.min(page_ms);
    }
    // Measured and printed, not asserted: a timing in a test flakes on a loaded machine
    // (docs/performance.md has the figures and how they were made).
    eprintln!("figures: cockpit best page load {best} ms of 3 (goal < 1000 ms)");

    // Decided approvals come newest first, 100 ids a page; Older goes back a page.
    let newest: i64 = h
        .run_ok(&[
            "sqlite3",
            "/var/lib/hyperhive/hive.sqlite",
            "SELECT max(id) FROM approvals",
        ])
        .parse()
        .unwrap();
    // LastApprovalId, which the page starts from, is hive-admin's as the listings are.
    h.run_ok(&[
        "sh",
        "-c",
        "echo 'hiveadm:x:1001:1001::/:/usr/sbin/nologin' >> /etc/passwd && \
         echo 'hiveadm:x:1001:' >> /etc/group && \
         sed -i 's/^hive-admin:x:\\([0-9]*\\):$/hive-admin:x:\\1:hiveadm/' /etc/group && \
         busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig",
    ]);
    let last_id_as = |user: &str| {
        h.run(&[
            "setpriv",
            "--reuid",
            user,
            "--regid",
            user,
            "--init-groups",
            "busctl",
            "call",
            "org.hyperhive.Hive1",
            "/org/hyperhive/hive1",
            "org.hyperhive.Hive1.Manager",
            "LastApprovalId",
        ])
    };
    let out = last_id_as("hiveadm");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("x {newest}"),
        "{}",
        stderr(&out)
    );
    let out = last_id_as("viewer");
    assert!(
        !out.status.success() && stderr(&out).contains("denied"),
        "{}",
        stderr(&out)
    );
    let first = "document.querySelector('#decided-body tr').getAttribute('data-approval')";
    assert_eq!(b.eval(first), newest.to_string());
    b.eval("document.getElementById('decided-next').click(), true");
    b.wait(
        "the next older page of decided approvals",
        Duration::from_secs(10),
        &format!("{first} == '{}'", newest - 100),
    );
}
