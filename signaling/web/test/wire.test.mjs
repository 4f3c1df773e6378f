// Control-message decoding of the page: the bounds of docs/PROTOCOL.md, coded refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeControl, jobOfLabel, jobLabel, newUuid, saveName, shown, humanSize, truncateBytes } from '../wire.js';

const id = '5d3c0a1e-0000-4000-8000-000000000001';
const hash = 'ab'.repeat(32);

test('decode_offer_valid_keeps_known_fields', () => {
  const m = decodeControl(JSON.stringify({ type: 'offer', file_id: id, name: 'a.txt', size: 3, hash, ttl_ms: 1000, extra: 1, group: { id, count: 2, index: 1, label: 'x/' } }));
  assert.equal(m.type, 'offer');
  assert.equal(m.size, 3);
  assert.deepEqual(m.group, { id, count: 2, index: 1, label: 'x/', bytes: undefined });
  assert.equal(m.text, false);
  assert.equal('extra' in m, false);
});

test('decode_malformed_messages_are_6005', () => {
  const bad = [
    'not json',
    '[]',
    '{"type":1}',
    JSON.stringify({ type: 'bogus' }),
    JSON.stringify({ type: 'offer', file_id: 'X', name: 'a', size: 1, hash, ttl_ms: 1 }),
    JSON.stringify({ type: 'offer', file_id: id, name: 'a', size: -1, hash, ttl_ms: 1 }),
    JSON.stringify({ type: 'offer', file_id: id, name: 'a', size: 1.5, hash, ttl_ms: 1 }),
    JSON.stringify({ type: 'offer', file_id: id, name: 'a', size: 1, hash: 'AB'.repeat(32), ttl_ms: 1 }),
    JSON.stringify({ type: 'offer', file_id: id, name: 'a', size: 2 ** 60, hash, ttl_ms: 1 }),
    JSON.stringify({ type: 'request', job_id: id, file_id: id }),
    JSON.stringify({ type: 'done', job_id: id, ok: 'yes' }),
    JSON.stringify({ type: 'hashes-request', job_id: id, file_id: id, offset: 0, length: 0 }),
    JSON.stringify({ type: 'hashes-request', job_id: id, file_id: id, offset: 0, length: 128 * 1024 * 1024 + 1 }),
    JSON.stringify({ type: 'batch-request', batch_id: id, jobs: [] }),
    JSON.stringify({ type: 'hello', version: 1, name: 'x'.repeat(20000) }),
  ];
  for (const text of bad) assert.throws(() => decodeControl(text), (e) => e.code === 6005, text.slice(0, 80));
  assert.throws(() => decodeControl(new ArrayBuffer(4)), (e) => e.code === 6005);
});

test('decode_request_done_error_fields', () => {
  assert.deepEqual(decodeControl(JSON.stringify({ type: 'request', job_id: id, file_id: id, offset: 7 })), { type: 'request', job_id: id, file_id: id, offset: 7 });
  assert.deepEqual(decodeControl(JSON.stringify({ type: 'done', job_id: id, ok: false, code: 5100 })), { type: 'done', job_id: id, ok: false, code: 5100 });
  assert.deepEqual(decodeControl(JSON.stringify({ type: 'error', file_id: id, code: 1185, message: 'big' })), { type: 'error', file_id: id, code: 1185, message: 'big' });
});

test('job_label_round_trip_and_foreign_labels_null', () => {
  const j = newUuid();
  assert.match(j, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(jobOfLabel(jobLabel(j)), j);
  assert.equal(jobOfLabel('batch/' + j), null);
  assert.equal(jobOfLabel('job/../x'), null);
});

test('names_from_peers_are_defused', () => {
  assert.equal(shown('a\u202Eb\u0007'), 'a\uFFFDb\uFFFD');
  assert.equal(saveName('../../etc/passwd'), 'passwd');
  assert.equal(saveName('..'), 'file');
  assert.equal(saveName('a\\b:c'), 'b_c');
  assert.equal(humanSize(1536), '1.5 KiB');
});

test('truncate_bytes_keeps_whole_characters', () => {
  assert.equal(truncateBytes('abc', 2), 'ab');
  assert.equal(truncateBytes('\u00e9\u00e9', 3), '\u00e9');
  assert.equal(truncateBytes('\u{1F600}x', 3), '');
  assert.equal(truncateBytes('short', 256), 'short');
});
