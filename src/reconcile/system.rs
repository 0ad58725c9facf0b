//! A system agent whose units match its spec may still run another system than its spec
//! names (the spec's `system` changed, e.g. a NixOS module's `config`): reconcile switches
//! it in place rather than keeping it or restarting it. Pure.

use std::path::Path;

use super::Action;

/// `Keep` becomes `Switch` when the system the agent's GC root names is not the spec's.
pub fn with_system(action: Action, running: Option<&Path>, wanted: Option<&Path>) -> Action {
    match (action, wanted) {
        (Action::Keep, Some(to)) if running != Some(to) => Action::Switch {
            from: running
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "unknown".into()),
            to: to.display().to_string(),
        },
        (action, _) => action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kept_system_agent_running_another_system_is_switched() {
        let (a, b) = (Path::new("/nix/store/a"), Path::new("/nix/store/b"));
        assert_eq!(
            with_system(Action::Keep, Some(a), Some(b)),
            Action::Switch {
                from: "/nix/store/a".into(),
                to: "/nix/store/b".into()
            }
        );
        assert_eq!(with_system(Action::Keep, Some(b), Some(b)), Action::Keep);
        assert_eq!(with_system(Action::Keep, None, None), Action::Keep);
        assert_eq!(
            with_system(Action::Create, Some(a), Some(b)),
            Action::Create
        );
        let rebuild = Action::Rebuild {
            live_plan: "x".into(),
        };
        assert_eq!(with_system(rebuild.clone(), Some(a), Some(b)), rebuild);
        assert!(with_system(Action::Keep, None, Some(b)).changes_units());
    }
}
