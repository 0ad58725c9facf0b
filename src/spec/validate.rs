//! The steps of [`AgentSpec::validate`](super::AgentSpec::validate) that check one
//! group of fields each, in the order the validation runs them (pure).

use std::path::{Path, PathBuf};

use super::claude::{self, ClaudeSpec};
use super::egress::EgressEntry;
use super::{
    bounds, clean_abs_path, egress_entries, system, Bind, Network, SpecError, SpecFile,
    DEFAULT_TURN_TIMEOUT, DROPPED_CAPABILITIES, MAX_TURN_TIMEOUT, RESERVED_TARGETS,
};

/// The spec's own PATH entries: absolute, clean, without `:`, each once.
pub(super) fn clean_path(file: &SpecFile) -> Result<Vec<PathBuf>, SpecError> {
    let mut path = Vec::new();
    for dir in &file.path {
        let dir = clean_abs_path("path entry", dir)?;
        if dir.to_string_lossy().contains(':') {
            return Err(SpecError::PathEntryColon(dir));
        }
        if !path.contains(&dir) {
            path.push(dir);
        }
    }
    Ok(path)
}

/// The spec's binds: none on a reserved target or over `/`, each target once, and in a
/// system agent none where its activation writes.
pub(super) fn clean_binds(file: &SpecFile, is_system: bool) -> Result<Vec<Bind>, SpecError> {
    let mut binds: Vec<Bind> = Vec::new();
    for entry in &file.bind {
        let bind = entry.to_bind()?;
        for reserved in RESERVED_TARGETS {
            if bind.target.starts_with(reserved) {
                return Err(SpecError::BindReserved {
                    target: bind.target,
                    reserved,
                });
            }
        }
        if bind.target == Path::new("/") {
            return Err(SpecError::BindOverRoot);
        }
        if is_system {
            system::check_bind_target(&bind.target)?;
        }
        if binds.iter().any(|b| b.target == bind.target) {
            return Err(SpecError::BoundTwice(bind.target));
        }
        binds.push(bind);
    }
    Ok(binds)
}

/// The resource bounds in systemd's range: `memory_max` and `disk_max` in bytes, and
/// `tasks_max` and `cpu_weight` checked.
pub(super) fn checked_bounds(file: &SpecFile) -> Result<(Option<u64>, Option<u64>), SpecError> {
    let memory_max = match &file.memory_max {
        Some(size) => Some(size.bytes().map_err(|e| e.in_field("memory_max"))?),
        None => None,
    };
    if memory_max == Some(0) {
        return Err(SpecError::MemoryZero);
    }
    // Specs are saved as TOML, whose integers are i64; systemd has no use for more.
    const LIMIT: u64 = i64::MAX as u64;
    if memory_max.is_some_and(|m| m > LIMIT) {
        return Err(SpecError::LimitTooLarge {
            field: "memory_max",
            max: LIMIT,
            unit: " bytes",
        });
    }
    if file.tasks_max.is_some_and(|t| t > LIMIT) {
        return Err(SpecError::LimitTooLarge {
            field: "tasks_max",
            max: LIMIT,
            unit: "",
        });
    }
    if let Some(w) = file.cpu_weight {
        if !(1..=10_000).contains(&w) {
            return Err(SpecError::CpuWeight(w));
        }
    }
    if file.tasks_max == Some(0) {
        return Err(SpecError::TasksZero);
    }
    let disk_max = match &file.disk_max {
        Some(size) => {
            let bytes = size.bytes().map_err(|e| e.in_field("disk_max"))?;
            bounds::check_disk_max(bytes).map_err(SpecError::DiskMax)?;
            Some(bytes)
        }
        None => None,
    };
    Ok((memory_max, disk_max))
}

/// The capabilities the spec keeps: only ones dropped by default, each once, sorted.
pub(super) fn clean_capabilities(file: &SpecFile) -> Result<Vec<String>, SpecError> {
    let mut capabilities = Vec::new();
    for cap in &file.capabilities {
        if !DROPPED_CAPABILITIES.contains(&cap.as_str()) {
            return Err(SpecError::Capability(cap.clone()));
        }
        if !capabilities.contains(cap) {
            capabilities.push(cap.clone());
        }
    }
    capabilities.sort();
    Ok(capabilities)
}

/// Whether and how long the agent runs in turns: a Claude Code agent always does (and
/// has no harness command of its own), a turn timeout needs turns, and claude's wait for
/// an admin must end within a turn.
pub(super) fn checked_turns(
    file: &SpecFile,
    harness: &[String],
    claude: Option<&ClaudeSpec>,
) -> Result<Option<u64>, SpecError> {
    if claude.is_some() {
        if !harness.is_empty() {
            return Err(SpecError::ClaudeWithHarness);
        }
        if file.turns == Some(false) {
            return Err(SpecError::ClaudeWithoutTurns);
        }
    }
    // A Claude Code agent runs in turns: claude is started once per wake.
    let turns = match (file.turns.unwrap_or(claude.is_some()), file.turn_timeout) {
        (false, None) => None,
        (false, Some(_)) => return Err(SpecError::TurnTimeoutWithoutTurns),
        (true, timeout) => {
            let timeout = timeout.unwrap_or(DEFAULT_TURN_TIMEOUT);
            if !(1..=MAX_TURN_TIMEOUT).contains(&timeout) {
                return Err(SpecError::TurnTimeout(timeout));
            }
            if harness.is_empty() && claude.is_none() {
                return Err(SpecError::TurnsWithoutHarness);
            }
            Some(timeout)
        }
    };
    if let (Some(c), Some(turn)) = (claude, turns) {
        if c.permission == claude::Permission::Approvals && c.permission_timeout >= turn {
            return Err(SpecError::ClaudePermissionPastTurn {
                wait: c.permission_timeout,
                turn,
            });
        }
    }
    Ok(turns)
}

/// The egress allowlist: the spec's own, or for a Claude Code agent on a private network
/// that names none, what claude needs.
pub(super) fn egress_of(
    file: &SpecFile,
    claude: Option<&ClaudeSpec>,
    network: Network,
) -> Result<Vec<EgressEntry>, SpecError> {
    // A Claude Code agent in one line: on its private network it reaches Anthropic's
    // API (and, signing in without a key, its sign-in) unless its spec names its
    // egress itself. Saved in the spec, so status and plan show it like any entry.
    let default_egress = match claude {
        Some(c) if network == Network::Private && file.egress.is_empty() => c.default_egress(),
        _ => Vec::new(),
    };
    let raw_egress = if default_egress.is_empty() {
        &file.egress[..]
    } else {
        &default_egress[..]
    };
    let egress = egress_entries(raw_egress, network)?;
    Ok(egress)
}
