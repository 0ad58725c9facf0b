//! Cockpit's web service in a test host, for tests/it/cockpit.rs: the page installed in a
//! user's home, `cockpit-ws --local-session` as a unit (loopback only, no login: the bridge
//! runs as the unit's user), and the page opened in a fresh browser tab.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::browser::Browser;
use crate::common::*;

pub(crate) const COCKPIT_WS: &str = "/usr/lib/cockpit/cockpit-ws";

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies cockpit/hyperhive/ to `home`/.local/share/cockpit/hyperhive/ in the test host,
/// where Cockpit finds a user's own packages.
pub(crate) fn install_page(h: &TestHost, home: &str) {
    let dest = PathBuf::from(format!(
        "/proc/{}/root{home}/.local/share/cockpit/hyperhive",
        h.leader()
    ));
    std::fs::create_dir_all(&dest).unwrap();
    for f in std::fs::read_dir(repo().join("cockpit/hyperhive")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dest.join(f.file_name())).unwrap();
    }
    h.run_ok(&["chmod", "-R", "a+rX", home]);
}

/// `cockpit-ws --local-session` as a unit of the test host: every browser that connects
/// gets a bridge running as `user` (root: None), no login.
pub(crate) fn start_cockpit(h: &TestHost, unit: &str, user: Option<&str>, home: &str) -> u16 {
    install_page(h, home);
    if let Some(u) = user {
        // The bridge writes its cache under the home it gets from passwd.
        h.run_ok(&["chown", "-R", &format!("{u}:{u}"), home]);
    }
    let port = free_port().to_string();
    let path = format!(
        "Environment=PATH={}:/usr/sbin:/usr/bin:/sbin:/bin",
        bin_dir().display()
    );
    let home_env = format!("Environment=HOME={home}");
    let mut argv = vec!["systemd-run", "--unit", unit, "-p", &home_env, "-p", &path];
    let user_prop = user.map(|u| format!("User={u}"));
    if let Some(u) = &user_prop {
        argv.extend(["-p", u]);
    }
    argv.extend([
        "--",
        COCKPIT_WS,
        "--no-tls",
        "--address",
        "127.0.0.1",
        "--port",
        &port,
        "--local-session=cockpit-bridge",
    ]);
    h.run_ok(&argv);
    let port: u16 = port.parse().unwrap();
    // Test hosts share the machine's network namespace: the browser reaches it directly.
    h.wait_for(
        &format!("{unit} listening on 127.0.0.1:{port}"),
        Duration::from_secs(15),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    port
}

/// A --local-session cockpit-ws serves one session: its bridge ends with the page's
/// socket, so each fresh page load gets the web service restarted.
pub(crate) fn fresh_session(h: &TestHost, unit: &str, port: u16) {
    h.run_ok(&["systemctl", "restart", unit]);
    h.wait_for(
        &format!("{unit} listening again"),
        Duration::from_secs(15),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

pub(crate) fn page_url(port: u16, view: &str) -> String {
    format!("http://127.0.0.1:{port}/cockpit/@localhost/hyperhive/index.html#{view}")
}

/// Opens the page and waits until both lists were read; returns the page's own load time
/// (navigation start to rendered, from performance.now()) in ms.
pub(crate) fn open(b: &mut Browser, port: u16, view: &str) -> u64 {
    // In a fresh tab, so that a URL differing only in its hash still loads anew.
    b.new_tab();
    b.clear_cookies();
    b.navigate(&page_url(port, view));
    let ms = b.wait(
        "the page loaded",
        Duration::from_secs(30),
        "document.body && document.body.getAttribute('data-loaded-ms')",
    );
    ms.as_str().unwrap().parse().unwrap()
}
