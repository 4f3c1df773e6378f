//! The peer control-channel codec: `ControlMessage::decode` on whatever a peer sends on
//! the control data channel, and `parse_job_channel_label` on data channel labels.
//!
//! Invariants: nothing over 16 KiB is parsed; an accepted message satisfies the checks of
//! `validate`; decode → encode → decode gives the same message and encoding is canonical;
//! a parsed job label prints back to a label that parses to the same job.
#![no_main]

use libfuzzer_sys::fuzz_target;
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

    if let Ok(label) = std::str::from_utf8(data)
        && let Some(job) = parse_job_channel_label(label)
    {
        let printed = job_channel_label(&job);
        assert_eq!(parse_job_channel_label(&printed), Some(job));
    }
});
