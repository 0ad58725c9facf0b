//! The API's calls in flight, so that a daemon told to stop answers what it was already
//! asked before it exits: `systemctl restart hive-c0re` then loses no admin's call. (New
//! calls do not reach a stopping daemon: it gives up its bus name first, and the bus holds
//! them for the next one — D-Bus activation, units/dbus-1/system-services.)

use std::time::Duration;

use tokio::sync::watch;

/// Counts calls being served; cheap to clone, shared by every method of the API.
#[derive(Clone)]
pub struct Calls(watch::Sender<usize>);

/// One call being served; the count goes down when it is dropped, however the call ends.
pub struct Call(watch::Sender<usize>);

impl Default for Calls {
    fn default() -> Self {
        Calls(watch::channel(0).0)
    }
}

impl Calls {
    pub fn enter(&self) -> Call {
        self.0.send_modify(|n| *n += 1);
        Call(self.0.clone())
    }

    pub fn in_flight(&self) -> usize {
        *self.0.borrow()
    }

    /// Waits until no call is being served, at most `bound`; returns how many still were.
    pub async fn drained(&self, bound: Duration) -> usize {
        let mut rx = self.0.subscribe();
        let idle = async move { rx.wait_for(|n| *n == 0).await.is_ok() };
        match tokio::time::timeout(bound, idle).await {
            Ok(_) => 0,
            Err(_) => self.in_flight(),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_the_last_call_and_is_bounded() {
        let calls = Calls::default();
        assert_eq!(calls.drained(Duration::from_millis(1)).await, 0);
        let a = calls.enter();
        let b = calls.enter();
        assert_eq!(calls.in_flight(), 2);
        assert_eq!(calls.drained(Duration::from_millis(20)).await, 2);
        drop(a);
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(b);
        });
        assert_eq!(calls.drained(Duration::from_secs(5)).await, 0);
        later.await.unwrap();
    }
}
