//! "Why did it crash?": the last time systemd saw a unit of the agent fail, read from
//! systemd's own journal entries about it. After an automatic restart the unit's
//! properties (Result, ExecMainCode, ExecMainStatus) describe the new, healthy process, so
//! the cause lives only in the journal: PID 1's "Main process exited" entry
//! (MESSAGE_ID 98e32220…, EXIT_CODE/EXIT_STATUS) and its "Failed with result" entry
//! (MESSAGE_ID d9b373ed…, UNIT_RESULT), both carrying the failed INVOCATION_ID.

use std::process::Command;

use serde::Serialize;

/// systemd's SD_MESSAGE_UNIT_PROCESS_EXIT.
pub const PROCESS_EXIT: &str = "98e322203f7a4ed290d09fe03c09fe15";
/// systemd's SD_MESSAGE_UNIT_FAILURE_RESULT.
pub const FAILURE_RESULT: &str = "d9b373ed55a64feb8242e02dbe79a49c";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crash {
    /// When systemd recorded the failure, µs since the epoch.
    pub at_usec: u64,
    /// The unit's Result for that invocation: `signal`, `exit-code`, `watchdog`, …
    pub result: String,
    /// How the main process ended: `killed`, `exited`, `dumped` ("" if not recorded).
    pub exit_code: String,
    /// Signal number or exit status, as systemd logged it.
    pub exit_status: String,
    pub invocation_id: String,
}

impl Crash {
    /// `killed by signal 9/KILL`, `exited with status 3`, …
    pub fn how(&self) -> String {
        let sig = |s: &str| match signal_name(s) {
            Some(n) => format!("{s}/{n}"),
            None => s.to_owned(),
        };
        match self.exit_code.as_str() {
            "killed" => format!("killed by signal {}", sig(&self.exit_status)),
            "dumped" => format!("dumped core on signal {}", sig(&self.exit_status)),
            "exited" => format!("exited with status {}", self.exit_status),
            "" => "main process end not recorded".into(),
            other => format!("{other}, status {}", self.exit_status),
        }
    }
}

fn signal_name(num: &str) -> Option<&'static str> {
    Some(match num.parse::<i32>().ok()? {
        1 => "HUP",
        2 => "INT",
        3 => "QUIT",
        4 => "ILL",
        5 => "TRAP",
        6 => "ABRT",
        7 => "BUS",
        8 => "FPE",
        9 => "KILL",
        10 => "USR1",
        11 => "SEGV",
        12 => "USR2",
        13 => "PIPE",
        14 => "ALRM",
        15 => "TERM",
        24 => "XCPU",
        25 => "XFSZ",
        _ => return None,
    })
}

/// The last failure among journal entries (journalctl -o json objects, oldest first):
/// the newest FAILURE_RESULT entry, completed by the PROCESS_EXIT entry of the same
/// invocation.
pub fn last_crash(entries: &[serde_json::Value]) -> Option<Crash> {
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    let failure = entries
        .iter()
        .rev()
        .find(|e| e["MESSAGE_ID"] == FAILURE_RESULT)?;
    let invocation = field(failure, "INVOCATION_ID");
    let exit = entries.iter().rev().find(|e| {
        e["MESSAGE_ID"] == PROCESS_EXIT
            && e["INVOCATION_ID"].as_str() == Some(invocation.as_str())
            && e["COMMAND"].as_str().is_none_or(|c| c == "ExecStart")
    });
    Some(Crash {
        at_usec: field(failure, "__REALTIME_TIMESTAMP").parse().unwrap_or(0),
        result: field(failure, "UNIT_RESULT"),
        exit_code: exit.map(|e| field(e, "EXIT_CODE")).unwrap_or_default(),
        exit_status: exit.map(|e| field(e, "EXIT_STATUS")).unwrap_or_default(),
        invocation_id: invocation,
    })
}

/// journalctl arguments for PID 1's failure entries about `unit`, on this host or (with
/// `machine`) in that container's journal.
pub fn journal_args(unit: &str, machine: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--quiet".into(),
        "--no-pager".into(),
        "-o".into(),
        "json".into(),
    ];
    if let Some(m) = machine {
        args.push(format!("--machine={m}"));
    }
    for id in [PROCESS_EXIT, FAILURE_RESULT] {
        if args.len() > 4 + usize::from(machine.is_some()) {
            args.push("+".into());
        }
        args.extend([
            "_PID=1".into(),
            format!("UNIT={unit}"),
            format!("MESSAGE_ID={id}"),
        ]);
    }
    args
}

/// Reads the last crash of `unit` from the journal; `None` if there was none, or the
/// journal cannot be read (e.g. the caller is not in the systemd-journal group).
pub fn read(unit: &str, machine: Option<&str>) -> Option<Crash> {
    let out = Command::new("journalctl")
        .args(journal_args(unit, machine))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    last_crash(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exit(inv: &str, code: &str, status: &str) -> serde_json::Value {
        json!({"MESSAGE_ID": PROCESS_EXIT, "INVOCATION_ID": inv, "EXIT_CODE": code,
               "EXIT_STATUS": status, "COMMAND": "ExecStart", "__REALTIME_TIMESTAMP": "1"})
    }

    fn failed(inv: &str, result: &str, at: &str) -> serde_json::Value {
        json!({"MESSAGE_ID": FAILURE_RESULT, "INVOCATION_ID": inv, "UNIT_RESULT": result,
               "__REALTIME_TIMESTAMP": at})
    }

    #[test]
    fn the_newest_failure_with_its_own_exit() {
        let entries = [
            exit("a", "exited", "3"),
            failed("a", "exit-code", "100"),
            exit("b", "killed", "9"),
            failed("b", "signal", "200"),
        ];
        let c = last_crash(&entries).unwrap();
        assert_eq!(c.invocation_id, "b");
        assert_eq!(c.at_usec, 200);
        assert_eq!(c.result, "signal");
        assert_eq!(c.how(), "killed by signal 9/KILL");
    }

    #[test]
    fn an_exit_of_another_invocation_is_not_taken() {
        let entries = [exit("a", "killed", "9"), failed("b", "watchdog", "5")];
        let c = last_crash(&entries).unwrap();
        assert_eq!(c.result, "watchdog");
        assert_eq!(c.how(), "main process end not recorded");
        assert!(last_crash(&[exit("a", "killed", "9")]).is_none());
    }

    #[test]
    fn how_reads_like_systemd() {
        let mut c = last_crash(&[exit("a", "exited", "3"), failed("a", "exit-code", "1")]).unwrap();
        assert_eq!(c.how(), "exited with status 3");
        c.exit_code = "dumped".into();
        c.exit_status = "11".into();
        assert_eq!(c.how(), "dumped core on signal 11/SEGV");
    }

    #[test]
    fn one_match_group_per_message_id() {
        assert_eq!(
            journal_args("hive-harness.service", Some("h-bob")),
            [
                "--quiet",
                "--no-pager",
                "-o",
                "json",
                "--machine=h-bob",
                "_PID=1",
                "UNIT=hive-harness.service",
                &format!("MESSAGE_ID={PROCESS_EXIT}"),
                "+",
                "_PID=1",
                "UNIT=hive-harness.service",
                &format!("MESSAGE_ID={FAILURE_RESULT}"),
            ]
        );
    }
}
