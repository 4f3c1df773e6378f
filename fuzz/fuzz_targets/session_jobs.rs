//! The session's job handling, stateful: a sequence of transfer reports, control messages
//! from the other peer, cancels, connection losses, departures and clock ticks, drawn from
//! the input, run through the session task step by step (stand-in connections and
//! transfer tasks, the injected clock), as the property tests of
//! src/session/job_props.rs do with random sequences.
//!
//! First byte even: a recipient's download jobs; odd: a sender's upload job with a
//! recipient and an outsider. Invariants (job_props.rs): every download job ends with
//! exactly one terminal event and one matching `done` (none after a local cancel); an
//! upload emits at most one terminal event, exactly one once finished, after the outcomes
//! it carries; outcomes only from peers the offer reached, final once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peershare::fuzz_harness::{fuzz_download, fuzz_upload};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let result = if which % 2 == 0 {
        fuzz_download(rest)
    } else {
        fuzz_upload(rest)
    };
    if let Err(property) = result {
        panic!("{property}");
    }
});
