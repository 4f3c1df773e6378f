// Getting back into the session after a lost signaling connection, as native peers do
// (docs/PROTOCOL.md "Client behaviour on a lost connection"): when the next attempt goes,
// and which refusals pass it on. Pure: the caller brings the attempt count and a random
// number.

/** How long after the loss attempts are made. */
export const RETRY_WINDOW_MS = 30000;
/** The wait before the second attempt; it doubles every attempt after, up to the cap. */
export const FIRST_DELAY_MS = 250;
export const MAX_DELAY_MS = 5000;

/** Codes with which a server passes a join on: draining (7012), store unreachable (7017). */
const PASSES_ON = new Set([7012, 7017]);

/** Whether a join refused with `code` is worth another attempt. */
export function passesOn(code) {
  return PASSES_ON.has(code);
}

/** A server's `retry_after_ms` from an error frame, at most the longest back-off (a
 * server cannot park a client), or null. */
export function hintOf(frame) {
  const ms = frame?.retry_after_ms;
  return Number.isFinite(ms) && ms >= 0 ? Math.min(ms, MAX_DELAY_MS) : null;
}

/** The wait (ms) before attempt `attempt` (0-based): the server's `hint` if it gave one,
 * else none before the first and `FIRST_DELAY_MS` doubling after, at most `MAX_DELAY_MS`,
 * drawn between half and all of it with `unit` in [0, 1). */
export function rejoinDelay(attempt, hint, unit) {
  if (hint !== null && hint !== undefined) return hint;
  const full = attempt === 0 ? 0 : Math.min(FIRST_DELAY_MS * 2 ** Math.min(attempt - 1, 20), MAX_DELAY_MS);
  const u = Number.isFinite(unit) ? Math.min(Math.max(unit, 0), 1) : 0;
  return full / 2 + (full / 2) * u;
}

/** What a pair does when signaling is back under the same client ID (docs/PROTOCOL.md
 * "Client behaviour on a lost connection"): a connection whose setup was under way lost
 * its signals, so it starts over at once, as native peers do. `pair`: `keyed` (the PAKE
 * gave a key), `connected` (the control channel is open), `done` (closed or failed),
 * `attempt` (a connection attempt exists), `offerer`. Returns 'none' (nothing under way),
 * 'lost' (drop the attempt: the offerer builds anew, the answerer asks for one), 'build'
 * (an offerer without an attempt) or 'ask' (an answerer without one). */
export function setupRestart(pair) {
  if (pair.done || !pair.keyed || pair.connected) return 'none';
  if (pair.attempt) return 'lost';
  return pair.offerer ? 'build' : 'ask';
}
