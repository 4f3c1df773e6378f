//! The recipient's reading of a batch channel (`BatchReader`, docs/PROTOCOL.md,
//! "Batches") under whatever a sender writes on it. The input is a batch (1 to 8 jobs and
//! their offered sizes) followed by messages: a flag byte (bit 0: text), a length byte,
//! and that many bytes (text) or a binary message of `length × 97` bytes.
//!
//! Invariants: no panic; bytes are credited only to the announced file, never more than
//! its offered size; jobs are announced or skipped only in the order of the request, each
//! once; a job counted complete is not unfinished; once the reader fails, it is not fed
//! further; `end` comes only when every job was announced or skipped, and nothing is
//! taken after it.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use peershare::proto::batch::{BatchReader, BatchStep};
use peershare::proto::ids::JobId;

fn job(k: usize) -> JobId {
    format!("00000000-0000-0000-0000-{k:012}")
        .parse()
        .unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, mut rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8) + 1;
    if rest.len() < n {
        return;
    }
    // Job IDs the input can name: 00000000-0000-0000-0000-00000000000k.
    let jobs: Vec<(JobId, u64)> = rest[..n]
        .iter()
        .enumerate()
        .map(|(i, size)| (job(i + 1), u64::from(*size) * 13))
        .collect();
    rest = &rest[n..];
    let sizes: HashMap<JobId, u64> = jobs.iter().copied().collect();
    let mut reader = BatchReader::new(jobs.clone());
    let mut next = 0usize;
    let mut current: Option<(JobId, u64)> = None;
    let mut ended = false;
    while rest.len() >= 2 {
        let (flag, len) = (rest[0], usize::from(rest[1]));
        rest = &rest[2..];
        let step = if flag & 1 == 1 {
            let take = len.min(rest.len());
            let text = &rest[..take];
            rest = &rest[take..];
            reader.on_text(text)
        } else {
            reader.on_bytes(len * 97)
        };
        let Ok(step) = step else { break };
        assert!(!ended, "a step after the end");
        match step {
            BatchStep::Start { job_id, size } => {
                assert!(current.is_none(), "a file announced inside another");
                assert_eq!(Some(&job_id), jobs.get(next).map(|(j, _)| j));
                assert_eq!(size, sizes[&job_id]);
                next += 1;
                if size > 0 {
                    current = Some((job_id, size));
                }
            }
            BatchStep::Bytes { job_id, complete } => {
                let (cur, left) = current.expect("bytes outside a file");
                assert_eq!(cur, job_id);
                let got = (len * 97) as u64;
                assert!(got <= left, "more bytes than the file has");
                assert_eq!(complete, got == left);
                current = (!complete).then_some((cur, left - got));
            }
            BatchStep::Skipped { job_id, .. } => {
                assert!(current.is_none());
                assert_eq!(Some(&job_id), jobs.get(next).map(|(j, _)| j));
                next += 1;
            }
            BatchStep::End => {
                assert!(current.is_none() && next == jobs.len());
                ended = true;
            }
        }
        let unfinished = reader.unfinished();
        let expected: Vec<JobId> = current
            .iter()
            .map(|(j, _)| *j)
            .chain(jobs[next..].iter().map(|(j, _)| *j))
            .collect();
        assert_eq!(unfinished, expected);
    }
});
