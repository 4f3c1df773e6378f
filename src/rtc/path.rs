//! Which path a connection uses: direct (host or server-reflexive candidates) or through
//! a TURN relay, read from the selected ICE candidate pair in the connection's stats.

use std::time::Instant;

use serde::Serialize;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateType, RTCStatsReportEntry, StatsSelector,
};

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

/// Read the selected candidate pair; `None` while none is selected.
pub async fn selected_path(pc: &dyn PeerConnection) -> Option<SelectedPath> {
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    let pair_id = report.iter().find_map(|e| match e {
        RTCStatsReportEntry::Transport(t) if !t.selected_candidate_pair_id.is_empty() => {
            Some(t.selected_candidate_pair_id.clone())
        }
        _ => None,
    })?;
    let Some(RTCStatsReportEntry::IceCandidatePair(pair)) = report.get(&pair_id) else {
        return None;
    };
    // The pair names candidates by their ICE ID; the report keys them with a prefix.
    let candidate_type = |prefix: &str, id: &str| {
        let entry = report
            .get(id)
            .or_else(|| report.get(&format!("{prefix}{id}")));
        match entry {
            Some(RTCStatsReportEntry::LocalCandidate(c))
            | Some(RTCStatsReportEntry::RemoteCandidate(c)) => Some(c.candidate_type),
            _ => None,
        }
    };
    let local = candidate_type("RTCLocalIceCandidate_", &pair.local_candidate_id)?;
    // webrtc 0.21 lists only signaled remote candidates in its stats; one learned from
    // an incoming check (peer-reflexive, common behind symmetric NATs) is missing.
    let remote = candidate_type("RTCRemoteIceCandidate_", &pair.remote_candidate_id)
        .unwrap_or(RTCIceCandidateType::Prflx);
    let relayed = local == RTCIceCandidateType::Relay || remote == RTCIceCandidateType::Relay;
    Some(SelectedPath {
        kind: if relayed {
            PathKind::Relay
        } else {
            PathKind::Direct
        },
        local: type_name(&local),
        remote: type_name(&remote),
    })
}
