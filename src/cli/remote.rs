//! `hivectl -H [USER@]HOST[:PORT]`: another host's daemon and systemd over ssh, with
//! systemd's own transport — the one `systemctl -H` uses, the D-Bus address
//! `unixexec:path=ssh,argv1=-xT,argv2=--,argv3=HOST,argv4=systemd-stdio-bridge`.
//!
//! zbus 5 understands that address, but it lets ssh write to our stderr and forgets the
//! child, so a broken transport would print ssh's lines around ours and give no reason in
//! hivectl's one-line error. So hivectl runs the same argv itself, on a socketpair (as the
//! D-Bus spec's unixexec does), keeps ssh's stderr, and hands the socket to zbus.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::BadInput;

/// The command run on the remote host; it joins ssh's stdio to the remote system bus.
pub const BRIDGE: &str = "systemd-stdio-bridge";

/// A remote host as `-H` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

fn word_ok(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

impl Host {
    /// `[USER@]HOST[:PORT]`, as `systemctl -H` takes it (without its `/CONTAINER`). Host
    /// names and IPv4 addresses only; nothing that ssh could read as an option.
    pub fn parse(raw: &str) -> Result<Host, BadInput> {
        let bad = |why: &str| {
            BadInput(format!(
                "-H {raw:?}: {why}; expected [USER@]HOST[:PORT] as for systemctl -H"
            ))
        };
        let (user, rest) = match raw.split_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, raw),
        };
        if let Some(u) = user {
            if !word_ok(u) {
                return Err(bad("bad user name"));
            }
        }
        if rest.contains('/') {
            return Err(bad("containers (HOST/CONTAINER) are not supported"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("bad port"))?;
                (h, Some(port))
            }
            None => (rest, None),
        };
        if !word_ok(host) {
            return Err(bad("bad host name"));
        }
        Ok(Host {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        })
    }

    /// `USER@HOST` or `HOST`, as ssh takes it (and as errors name it).
    pub fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// The ssh binary: `$SYSTEMD_SSH` (as systemctl honours it), else `ssh` on PATH.
    pub fn ssh_program() -> OsString {
        std::env::var_os("SYSTEMD_SSH")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "ssh".into())
    }

    /// ssh's arguments for running `remote` (already one shell-quoted line) on the host.
    fn ssh_args(&self, remote: &str) -> Vec<String> {
        let mut args = vec!["-xT".to_string()];
        if let Some(p) = self.port {
            args.extend(["-p".to_string(), p.to_string()]);
        }
        args.extend(["--".to_string(), self.destination(), remote.to_string()]);
        args
    }

    /// `ssh -xT [-p PORT] -- DEST systemd-stdio-bridge`: exactly systemctl -H's argv.
    pub fn bridge_args(&self) -> Vec<String> {
        self.ssh_args(BRIDGE)
    }

    /// ssh's arguments for running `argv` on the host. ssh hands the remote side one
    /// string for its shell, so every word is quoted.
    pub fn command_args(&self, argv: &[String]) -> Vec<String> {
        let line = argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        self.ssh_args(&line)
    }

    /// The same transport as a D-Bus address, for `busctl --address=` and the docs.
    pub fn unixexec_address(&self) -> String {
        let mut addr = String::from("unixexec:path=");
        addr.push_str(&percent_encode(&Self::ssh_program().to_string_lossy()));
        for (i, a) in self.bridge_args().iter().enumerate() {
            addr.push_str(&format!(",argv{}={}", i + 1, percent_encode(a)));
        }
        addr
    }

    /// Connects to the host's system bus through `ssh … systemd-stdio-bridge`.
    pub async fn connect(&self) -> Result<zbus::Connection> {
        let dest = self.destination();
        let program = Self::ssh_program();
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().context("creating a socketpair for ssh")?;
        let theirs_too = theirs.try_clone().context("duplicating a socket")?;
        let mut child = tokio::process::Command::new(&program)
            .args(self.bridge_args())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_too)))
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("reaching {dest}: running {}", program.to_string_lossy()))?;
        // ssh's last few stderr lines, read for as long as it runs; they are the reason
        // when the connection fails.
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let stderr = child.stderr.take();
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        let keep = tail.clone();
        tokio::spawn(async move {
            let read = async {
                let Some(stderr) = stderr else { return };
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = line.trim().to_owned();
                    if line.is_empty() {
                        continue;
                    }
                    let mut t = keep.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == 4 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            };
            let (status, ()) = tokio::join!(child.wait(), read);
            let _ = exit_tx.send(status);
        });

        ours.set_nonblocking(true)
            .context("setting up the ssh socket")?;
        let stream = tokio::net::UnixStream::from_std(ours).context("setting up the ssh socket")?;
        match zbus::connection::Builder::socket(stream).build().await {
            Ok(conn) => Ok(conn),
            Err(e) => {
                // Give ssh a moment to exit and say why.
                let status = tokio::time::timeout(Duration::from_secs(3), exit_rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(Result::ok);
                let said = tail
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .back()
                    .cloned();
                let how = match status.map(|s| s.code()) {
                    Some(Some(code)) => format!(" (ssh exited with status {code})"),
                    Some(None) => " (ssh was killed)".to_string(),
                    None => String::new(),
                };
                let why = said.unwrap_or_else(|| e.to_string());
                Err(anyhow::anyhow!(
                    "reaching {dest} over ssh ({BRIDGE}): {why}{how}"
                ))
            }
        }
    }
}

/// As `-H` takes it: `[USER@]HOST[:PORT]`.
impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.destination())?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// One word for a POSIX shell: as it is when it is plainly safe, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '=' | '.' | '/' | ',' | ':' | '@' | '+')
        });
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// D-Bus address value escaping: everything but `[-0-9A-Za-z_/.\*]` as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_/.\\*".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_systemctl_takes_them() {
        let h = Host::parse("root@hive2.example.org").unwrap();
        assert_eq!(h.destination(), "root@hive2.example.org");
        assert_eq!(
            h.bridge_args(),
            [
                "-xT",
                "--",
                "root@hive2.example.org",
                "systemd-stdio-bridge"
            ]
        );
        let h = Host::parse("10.0.0.7:2222").unwrap();
        assert_eq!(
            h.bridge_args(),
            [
                "-xT",
                "-p",
                "2222",
                "--",
                "10.0.0.7",
                "systemd-stdio-bridge"
            ]
        );
        for bad in [
            "",
            "@",
            "root@",
            "@host",
            "-oProxyCommand=sh",
            "root@-x",
            "host:0",
            "host:99999",
            "host:",
            "a b",
            "host/h-alice",
            "a@b@c",
            "host;rm",
            ".hidden",
        ] {
            let e = Host::parse(bad).unwrap_err().0;
            assert!(e.starts_with("-H "), "{bad:?}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn the_address_is_systemctls() {
        let h = Host::parse("root@th").unwrap();
        if std::env::var_os("SYSTEMD_SSH").is_none() {
            assert_eq!(
                h.unixexec_address(),
                "unixexec:path=ssh,argv1=-xT,argv2=--,argv3=root%40th,argv4=systemd-stdio-bridge"
            );
            // And zbus reads it back as the same transport.
            let addr: zbus::Address = h.unixexec_address().as_str().try_into().unwrap();
            assert!(addr.to_string().starts_with("unixexec:path=ssh,argv1=-xT"));
        }
    }

    #[test]
    fn remote_commands_are_quoted_for_the_remote_shell() {
        let h = Host::parse("th").unwrap();
        let argv: Vec<String> = [
            "journalctl",
            "--since=1 hour ago",
            "HIVE_AGENT=alice",
            "it's",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            h.command_args(&argv).last().unwrap(),
            r"journalctl '--since=1 hour ago' HIVE_AGENT=alice 'it'\''s'"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
    }
}
