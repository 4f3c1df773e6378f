//! Which path a connection uses: direct (host or server-reflexive candidates) or through
//! a TURN relay, read from the ICE transport's selected candidate pair.

use serde::Serialize;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidate, RTCIceCandidateType};

/// The kind of path a connection's selected candidate pair uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// Host, server-reflexive or peer-reflexive candidates on both ends.
    Direct,
    /// A TURN relay candidate on at least one end.
    Relay,
}

/// The selected pair's candidate types, e.g. `("host", "srflx")`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectedPath {
    pub kind: PathKind,
    pub local: String,
    pub remote: String,
}

fn type_name(t: &RTCIceCandidateType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{t:?}").to_lowercase())
}

/// Read the selected candidate pair; `None` while none is selected. `peer_relay_only`:
/// the peer announced that it connects only through a relay.
pub async fn selected_path(pc: &dyn PeerConnection, peer_relay_only: bool) -> Option<SelectedPath> {
    let ice = pc.sctp().await?.transport().ice_transport();
    let pair = ice.get_selected_candidate_pair().await.ok().flatten()?;
    let remote_candidates = ice.get_remote_candidates().await.unwrap_or_default();
    Some(classify(
        pair.local(),
        pair.remote(),
        &remote_candidates,
        peer_relay_only,
    ))
}

/// The path of a selected pair. The remote end of the pair is peer-reflexive when the
/// peer's checks arrived before the candidate they came from was signaled; when that
/// address is one of the peer's signaled relay candidates, or the peer connects only
/// through a relay, the peer is sending through its TURN relay, and the path is relayed
/// although neither end of the pair says `relay`.
fn classify(
    local: &RTCIceCandidate,
    remote: &RTCIceCandidate,
    remote_candidates: &[RTCIceCandidate],
    peer_relay_only: bool,
) -> SelectedPath {
    let peer_relayed = match remote.typ {
        RTCIceCandidateType::Relay => true,
        RTCIceCandidateType::Prflx => {
            peer_relay_only
                || remote_candidates.iter().any(|c| {
                    c.typ == RTCIceCandidateType::Relay
                        && c.address == remote.address
                        && c.port == remote.port
                })
        }
        _ => false,
    };
    let kind = if local.typ == RTCIceCandidateType::Relay || peer_relayed {
        PathKind::Relay
    } else {
        PathKind::Direct
    };
    SelectedPath {
        kind,
        local: type_name(&local.typ),
        remote: type_name(&remote.typ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(typ: RTCIceCandidateType, address: &str, port: u16) -> RTCIceCandidate {
        RTCIceCandidate {
            typ,
            address: address.into(),
            port,
            ..Default::default()
        }
    }

    #[test]
    fn classify_relay_on_either_end_is_relayed() {
        let host = candidate(RTCIceCandidateType::Host, "192.0.2.1", 5000);
        let relay = candidate(RTCIceCandidateType::Relay, "203.0.113.9", 40000);
        assert_eq!(classify(&relay, &host, &[], false).kind, PathKind::Relay);
        let path = classify(&host, &relay, std::slice::from_ref(&relay), false);
        assert_eq!(path.kind, PathKind::Relay);
        assert_eq!(
            (path.local.as_str(), path.remote.as_str()),
            ("host", "relay")
        );
    }

    #[test]
    fn classify_host_and_reflexive_pairs_are_direct() {
        let host = candidate(RTCIceCandidateType::Host, "192.0.2.1", 5000);
        let srflx = candidate(RTCIceCandidateType::Srflx, "198.51.100.7", 6000);
        let prflx = candidate(RTCIceCandidateType::Prflx, "198.51.100.8", 6001);
        assert_eq!(classify(&host, &srflx, &[], false).kind, PathKind::Direct);
        // A peer-reflexive address that is none of the peer's relay candidates: a NAT's.
        let others = [
            srflx.clone(),
            candidate(RTCIceCandidateType::Relay, "203.0.113.9", 40000),
        ];
        let path = classify(&host, &prflx, &others, false);
        assert_eq!(path.kind, PathKind::Direct);
        assert_eq!(path.remote, "prflx");
    }

    #[test]
    fn classify_peer_reflexive_relay_address_is_relayed() {
        let host = candidate(RTCIceCandidateType::Host, "192.0.2.1", 5000);
        // The peer's checks came from its relay before its relay candidate was signaled.
        let prflx = candidate(RTCIceCandidateType::Prflx, "203.0.113.9", 40000);
        let signaled = [candidate(RTCIceCandidateType::Relay, "203.0.113.9", 40000)];
        let path = classify(&host, &prflx, &signaled, false);
        assert_eq!(path.kind, PathKind::Relay);
        assert_eq!(
            (path.local.as_str(), path.remote.as_str()),
            ("host", "prflx")
        );
        // The same port on another address, or another port, is not that relay.
        let elsewhere = [
            candidate(RTCIceCandidateType::Relay, "203.0.113.10", 40000),
            candidate(RTCIceCandidateType::Relay, "203.0.113.9", 40001),
        ];
        assert_eq!(
            classify(&host, &prflx, &elsewhere, false).kind,
            PathKind::Direct
        );
    }

    #[test]
    fn classify_peer_reflexive_from_relay_only_peer_is_relayed() {
        let host = candidate(RTCIceCandidateType::Host, "127.0.0.1", 5000);
        let prflx = candidate(RTCIceCandidateType::Prflx, "127.0.0.1", 40000);
        // Before any of its candidates arrived: a relay-only peer has no other address.
        assert_eq!(classify(&host, &prflx, &[], true).kind, PathKind::Relay);
    }
}
