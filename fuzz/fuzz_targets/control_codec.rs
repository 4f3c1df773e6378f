//! The peer control-channel codec: `ControlMessage::decode` on whatever a peer sends on
//! the control data channel, and `parse_job_channel_label` / `parse_batch_channel_label`
//! on data channel labels.
//!
//! Invariants: nothing over 16 KiB is parsed; an accepted message satisfies the checks of
//! `validate`; decode → encode → decode gives the same message and encoding is canonical;
//! an accepted `batch-request` names 1 to 128 jobs, each job and file once, none with the
//! batch's ID; a parsed job (batch) label prints back to a label that parses to the same
//! job (batch) and never to the other kind.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use peershare::proto::batch::{MAX_BATCH_JOBS, batch_channel_label, parse_batch_channel_label};
use peershare::proto::control::{
    ControlMessage, DecodeError, MAX_CONTROL_MESSAGE, MAX_NAME_BYTES, job_channel_label,
    parse_job_channel_label,
};

fuzz_target!(|data: &[u8]| {
    let decoded = ControlMessage::decode(data);
    if data.len() > MAX_CONTROL_MESSAGE {
        assert_eq!(decoded, Err(DecodeError::TooLarge(data.len())));
        return;
    }
    match decoded {
        Ok(msg) => {
            match &msg {
                ControlMessage::Hello { name, .. } => assert!(name.len() <= MAX_NAME_BYTES),
                ControlMessage::Offer {
                    name, hash, group, ..
                } => {
                    assert!(name.len() <= MAX_NAME_BYTES);
                    assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
                    if let Some(g) = group {
                        assert!(g.count > 0 && g.index < g.count);
                    }
                }
                ControlMessage::Error { message, .. } => {
                    assert!(message.len() <= MAX_CONTROL_MESSAGE / 2)
                }
                ControlMessage::BatchRequest { batch_id, jobs } => {
                    assert!(!jobs.is_empty() && jobs.len() <= MAX_BATCH_JOBS);
                    let ids: HashSet<_> = jobs.iter().map(|j| j.job_id).collect();
                    let files: HashSet<_> = jobs.iter().map(|j| j.file_id).collect();
                    assert!(ids.len() == jobs.len() && files.len() == jobs.len());
                    assert!(!ids.contains(batch_id));
                }
                _ => {}
            }
            let text = msg.encode();
            let again = ControlMessage::decode(text.as_bytes());
            assert_eq!(
                again.as_ref(),
                Ok(&msg),
                "re-encoded {text:?} does not decode back"
            );
            assert_eq!(again.unwrap().encode(), text, "encoding is not canonical");
        }
        Err(DecodeError::TooLarge(_)) => panic!("TooLarge for {} bytes", data.len()),
        Err(DecodeError::UnknownType(t)) => assert!(t.chars().count() <= 64),
        Err(_) => {}
    }

    if let Ok(label) = std::str::from_utf8(data) {
        if let Some(job) = parse_job_channel_label(label) {
            let printed = job_channel_label(&job);
            assert_eq!(parse_job_channel_label(&printed), Some(job));
            assert_eq!(parse_batch_channel_label(&printed), None);
        }
        if let Some(batch) = parse_batch_channel_label(label) {
            let printed = batch_channel_label(&batch);
            assert_eq!(parse_batch_channel_label(&printed), Some(batch));
            assert_eq!(parse_job_channel_label(&printed), None);
        }
    }
});
