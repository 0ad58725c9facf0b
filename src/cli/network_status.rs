//! The network part of `hivectl status`: what the agent's network is and what it may
//! reach, read from its spec on disk, and what it was refused lately, from the journal of
//! its egress proxy (so it works while the daemon is down).

use serde::Serialize;

use crate::journal::{fields, Event};
use crate::paths::Roots;
use crate::plan::egress::{has_egress, proxy_unit_name};
use crate::spec::{AgentName, Network};

/// Refusals shown.
const LAST_REFUSED: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct NetworkStatus {
    pub network: Network,
    /// One line: a private namespace, or what a host-network agent shares with the host.
    pub summary: String,
    /// The egress allowlist, as `HOST:PORT` entries (private network only).
    pub egress: Vec<String>,
    /// The most recent refusals of its egress proxy, newest last.
    pub last_refused: Vec<Refused>,
    /// Its published ports and the host's socket for each.
    pub ports: Vec<PublishedPort>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishedPort {
    pub port: u16,
    pub socket: std::path::PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub destination: String,
    pub reason: String,
    pub at_usec: u64,
}

/// `None` when the spec cannot be read (no spec, or not root).
pub fn read(roots: &Roots, name: &AgentName) -> Option<NetworkStatus> {
    let spec = crate::hive::load_spec(roots, name).ok()?;
    let egress = has_egress(&spec);
    Some(NetworkStatus {
        network: spec.network,
        summary: crate::plan::network::describe(&spec),
        egress: spec.egress.iter().map(ToString::to_string).collect(),
        ports: spec
            .ports
            .iter()
            .map(|&port| PublishedPort {
                port,
                socket: crate::plan::ports::socket_path(&roots.runtime_dir(name), port),
            })
            .collect(),
        last_refused: if egress {
            last_refused(name)
        } else {
            Vec::new()
        },
    })
}

/// From the proxy unit's own entries (`_SYSTEMD_UNIT=` is journald's, not the writer's).
fn last_refused(name: &AgentName) -> Vec<Refused> {
    let Ok(out) = std::process::Command::new("journalctl")
        .args(["-o", "json", "--no-pager", "-n", &LAST_REFUSED.to_string()])
        .arg(format!("_SYSTEMD_UNIT={}", proxy_unit_name(name)))
        .arg(fields::assign(fields::EVENT, Event::EgressRefused.name()))
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).ok()?;
            Some(Refused {
                destination: format!(
                    "{}:{}",
                    crate::spec::one_line(e[fields::DEST_HOST].as_str()?),
                    e[fields::DEST_PORT].as_str()?
                ),
                reason: crate::spec::one_line(e[fields::REASON].as_str().unwrap_or("")),
                at_usec: e["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?,
            })
        })
        .collect()
}

/// The `   Network:`, `    Egress:`, `     Ports:` and `   Refused:` lines of the text
/// status.
pub fn render(st: &NetworkStatus) -> String {
    let mut out = format!("   Network: {}\n", st.summary);
    if st.network == Network::Private {
        let list = if st.egress.is_empty() {
            "none allowed (hivectl create --replace --egress HOST[:PORT], or an approval)".into()
        } else {
            st.egress.join(", ")
        };
        out.push_str(&format!("    Egress: {list}\n"));
        for (i, p) in st.ports.iter().enumerate() {
            let head = if i == 0 { "     Ports:" } else { "           " };
            out.push_str(&format!("{head} {} on {}\n", p.port, p.socket.display()));
        }
        for (i, r) in st.last_refused.iter().enumerate() {
            let head = if i == 0 { "   Refused:" } else { "           " };
            out.push_str(&format!(
                "{head} {} at {}\n",
                r.destination,
                super::render::format_usec(r.at_usec)
            ));
        }
    }
    out
}
