import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rejoinDelay, hintOf, passesOn, setupRestart, MAX_DELAY_MS } from '../rejoin.js';

test('rejoinDelay_rounds_double_to_the_cap_with_jitter_between_half_and_all', () => {
  const all = [0, 1, 2, 3, 4, 5, 6, 7].map((n) => rejoinDelay(n, null, 1));
  assert.deepEqual(all, [0, 250, 500, 1000, 2000, 4000, 5000, 5000]);
  const half = [0, 1, 2, 6].map((n) => rejoinDelay(n, null, 0));
  assert.deepEqual(half, [0, 125, 250, 2500]);
  assert.equal(rejoinDelay(1000, null, 1), MAX_DELAY_MS);
  assert.equal(rejoinDelay(2, null, NaN), 250);
});

test('rejoinDelay_server_hint_replaces_the_backoff', () => {
  assert.equal(rejoinDelay(0, 1000, 0.5), 1000);
  assert.equal(rejoinDelay(5, 0, 0.5), 0);
});

test('hintOf_caps_and_refuses_garbage', () => {
  assert.equal(hintOf({ retry_after_ms: 700 }), 700);
  assert.equal(hintOf({ retry_after_ms: 1e12 }), MAX_DELAY_MS);
  assert.equal(hintOf({ retry_after_ms: -1 }), null);
  assert.equal(hintOf({ retry_after_ms: '5' }), null);
  assert.equal(hintOf({}), null);
  assert.equal(hintOf(null), null);
});

test('passesOn_only_draining_and_unavailable', () => {
  assert.ok(passesOn(7012) && passesOn(7017));
  for (const c of [7005, 7006, 7007, 7016, 1180]) assert.ok(!passesOn(c), String(c));
});

test('setupRestart_pair_under_way_starts_over_connected_or_unkeyed_pair_does_not', () => {
  const pair = (o) => ({ keyed: true, connected: false, done: false, attempt: false, offerer: true, ...o });
  // Under way: an attempt is dropped and replaced; without one the offerer builds, the
  // answerer asks.
  assert.equal(setupRestart(pair({ attempt: true })), 'lost');
  assert.equal(setupRestart(pair({ attempt: true, offerer: false })), 'lost');
  assert.equal(setupRestart(pair({})), 'build');
  assert.equal(setupRestart(pair({ offerer: false })), 'ask');
  // Nothing under way: connected, no key yet (the PAKE never starts over), closed or failed.
  assert.equal(setupRestart(pair({ connected: true, attempt: true })), 'none');
  assert.equal(setupRestart(pair({ keyed: false })), 'none');
  assert.equal(setupRestart(pair({ keyed: false, attempt: true, offerer: false })), 'none');
  assert.equal(setupRestart(pair({ done: true, attempt: true })), 'none');
});
