//! What an agent's network is, in words an admin reads in `hivectl plan` and `status`.
//! Pure: the same spec gives the same sentence.

use crate::spec::{AgentSpec, Network};

/// What an agent on the host's network shares with the host: said plainly wherever that
/// choice is shown, because nothing else separates the agent from these.
pub const HOST_SHARES: &str =
    "the host's loopback services (127.0.0.1), its abstract unix sockets, \
every interface and address it reaches (cloud metadata, internal networks) and its DNS";

/// One line for the `network` host check and `hivectl status`.
pub fn describe(spec: &AgentSpec) -> String {
    match spec.network {
        Network::Host => {
            format!("host (network = \"host\", an admin's choice): the agent shares {HOST_SHARES}")
        }
        Network::Private => "private: a namespace of its own with only lo".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AgentName, SpecFile};

    fn spec(toml: &str) -> AgentSpec {
        let file = SpecFile::from_toml(toml, "test").unwrap();
        AgentSpec::validate(&AgentName::parse("alice").unwrap(), &file).unwrap()
    }

    #[test]
    fn host_network_says_what_it_shares() {
        let d = describe(&spec(
            "root = \"/\"\nvolatile = \"yes\"\nnetwork = \"host\"\n",
        ));
        for word in [
            "127.0.0.1",
            "abstract unix sockets",
            "cloud metadata",
            "DNS",
        ] {
            assert!(d.contains(word), "{d}");
        }
        let d = describe(&spec("root = \"/\"\nvolatile = \"yes\"\n"));
        assert!(d.starts_with("private"), "{d}");
    }
}
