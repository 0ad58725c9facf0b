//! The client side of the API, used by hivectl.

use zbus::proxy;
use zbus::zvariant::OwnedObjectPath;

#[proxy(
    interface = "org.hyperhive.Hive1.Manager",
    default_service = "org.hyperhive.Hive1",
    default_path = "/org/hyperhive/hive1",
    gen_blocking = false
)]
pub trait Manager {
    fn list_agents(&self) -> zbus::Result<Vec<(String, String, String, OwnedObjectPath)>>;
    fn get_agent(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn create_agent(&self, name: &str, spec_toml: &str) -> zbus::Result<String>;
    fn replace_agent(&self, name: &str, spec_toml: &str) -> zbus::Result<String>;
    fn start_agent(&self, name: &str) -> zbus::Result<String>;
    fn stop_agent(&self, name: &str) -> zbus::Result<()>;
    fn restart_agent(&self, name: &str) -> zbus::Result<()>;
    fn tell_agent(&self, name: &str, message: &str) -> zbus::Result<()>;
    fn tell_agent_new_session(&self, name: &str, message: &str) -> zbus::Result<()>;
    fn rebuild_agent(&self, name: &str) -> zbus::Result<String>;
    fn login_agent(
        &self,
        name: &str,
        term: &str,
        args: &[&str],
    ) -> zbus::Result<zbus::zvariant::OwnedFd>;
    fn destroy_agent(&self, name: &str, purge: bool) -> zbus::Result<()>;
    fn list_approvals(&self, all: bool) -> zbus::Result<Vec<super::ApprovalRecord>>;
    fn list_approvals_page(
        &self,
        all: bool,
        after: i64,
        limit: u32,
    ) -> zbus::Result<(Vec<super::ApprovalRecord>, i64)>;
    fn last_approval_id(&self) -> zbus::Result<i64>;
    fn show_approval(&self, id: i64) -> zbus::Result<String>;
    fn get_approval(&self, id: i64) -> zbus::Result<super::ApprovalRecord>;
    fn approve(&self, id: i64, note: &str) -> zbus::Result<super::ApprovalRecord>;
    fn deny(&self, id: i64, note: &str) -> zbus::Result<super::ApprovalRecord>;
    fn reload(&self, prune: bool) -> zbus::Result<String>;
    fn plan(&self, names: &[&str], prune: bool) -> zbus::Result<String>;
}
