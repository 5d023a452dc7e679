//! What every ban backend (the XDP maps, fail2ban) tells about itself: its
//! line in `status` and its `spamwall_backend_up` gauge.

use serde::{Deserialize, Serialize};

use super::{Fail2banLink, XdpBackend};

/// One ban backend and its health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub active: bool,
    pub detail: String,
    /// Operations waiting for delivery, for backends with a queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
}

/// A place where bans are enforced.
pub trait Backend {
    /// Its state; `in_use` says whether the manager sends it bans now.
    fn status(&self, in_use: bool) -> BackendStatus;
}

impl Backend for XdpBackend {
    fn status(&self, _in_use: bool) -> BackendStatus {
        BackendStatus {
            name: "xdp".to_owned(),
            active: self.enforcing,
            detail: self.note.clone(),
            queue_depth: None,
        }
    }
}

impl Backend for Fail2banLink {
    fn status(&self, in_use: bool) -> BackendStatus {
        let health = self.backend.health();
        let settings = self.backend.settings();
        let role = match (self.always, in_use) {
            (true, _) => "backend",
            (false, true) => "fallback, in use because XDP is not enforcing",
            (false, false) => "fallback, idle while XDP enforces",
        };
        let connection = if health.connected {
            format!(
                "connected to {} jail {}",
                settings.socket.display(),
                settings.jail
            )
        } else {
            format!(
                "not connected to {} ({})",
                settings.socket.display(),
                health.last_error.as_deref().unwrap_or("not tried yet")
            )
        };
        BackendStatus {
            name: "fail2ban".to_owned(),
            active: in_use,
            detail: format!(
                "{role}; {connection}; {} queued, {} delivered, {} errors, {} rejected",
                health.queue_depth, health.delivered, health.errors, health.rejected
            ),
            queue_depth: Some(health.queue_depth),
        }
    }
}
