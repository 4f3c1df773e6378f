//! Signaling frames: how the server turns a client's text frame into a `ClientMessage`
//! (`parse_client_frame`, the function the connection task calls), how a client parses
//! the server's frames (`serde_json::from_str::<ServerMessage>` in src/signal_client.rs),
//! and how it parses a relayed `signal.data` into `SignalData` (src/session/links.rs).
//!
//! Invariants: refusals carry code 7001 (malformed) or 7002 (unknown type); an accepted
//! frame re-encodes to a frame that parses to the same message, for all three types.
#![no_main]

use libfuzzer_sys::fuzz_target;
mod known;
use peershare_signaling::parse_client_frame;
use peershare_signaling::protocol::{ClientMessage, ServerMessage, SignalData, codes};

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 (tungstenite checks before we see them).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    match parse_client_frame(text) {
        Ok(msg) => {
            let encoded = serde_json::to_string(&msg).expect("ClientMessage serializes");
            let again = parse_client_frame(&encoded)
                .unwrap_or_else(|e| panic!("re-encoded {encoded:?} refused: {e}"));
            assert_same(&again, &msg, &encoded);
            if let ClientMessage::Signal { data, .. } = &msg {
                signal_data(data);
            }
        }
        Err(rej) => assert!(
            rej.code == codes::MALFORMED_FRAME || rej.code == codes::UNKNOWN_TYPE,
            "unexpected code {}",
            rej.code
        ),
    }

    if let Ok(msg) = serde_json::from_str::<ServerMessage>(text) {
        let encoded = serde_json::to_string(&msg).expect("ServerMessage serializes");
        let again: ServerMessage = serde_json::from_str(&encoded)
            .unwrap_or_else(|e| panic!("re-encoded {encoded:?} refused: {e}"));
        assert_same(&again, &msg, &encoded);
        if let ServerMessage::Signal { data, .. } = &msg {
            signal_data(data);
        }
    }
});

/// `again == msg`, except for F5: serde_json is built without its `float_roundtrip`
/// feature, so a float in `signal.data` may come back one ULP off after print → parse
/// (`1.8446744073705918e+20` → `1.844674407370592e+20`).
fn assert_same<T: PartialEq + std::fmt::Debug + serde::Serialize>(again: &T, msg: &T, via: &str) {
    if again == msg {
        return;
    }
    let close = known::tolerated("json-float-roundtrip")
        && approx_eq(
            &serde_json::to_value(again).expect("serializes"),
            &serde_json::to_value(msg).expect("serializes"),
        );
    assert!(
        close,
        "round trip via {via:?}: {msg:?} came back as {again:?}"
    );
}

fn approx_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| approx_eq(x, y)),
        (Object(x), Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| approx_eq(v, w)))
        }
        _ => a == b,
    }
}

/// What a client does with a relayed `signal.data`.
fn signal_data(data: &serde_json::Value) {
    if let Ok(sd) = serde_json::from_value::<SignalData>(data.clone()) {
        let value = serde_json::to_value(&sd).expect("SignalData serializes");
        let again: SignalData = serde_json::from_value(value).expect("SignalData round trip");
        assert_eq!(again, sd);
    }
}
