// The page's codes, SPAKE2 and sealing against the test vectors of docs/PROTOCOL.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Spake2, pairKey, seal, open, hex, parseCode, normalizeSecret, generateSecret, CodedError } from '../crypto.js';

const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const scalar = (fill) => BigInt('0x00' + fill.repeat(31)) % L;
const sdp = 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\na=fingerprint:sha-256 AB:CD\r\n';
const conn = '00000000-0000-4000-8000-000000000001';

test('spake2_protocol_vectors_match', () => {
  const a = new Spake2('A', 'orbit-canvas-tiger', '7', 'aaaaaaaaaaaa', 'bbbbbbbbbbbb', scalar('11'));
  const b = new Spake2('B', 'orbit-canvas-tiger', '7', 'aaaaaaaaaaaa', 'bbbbbbbbbbbb', scalar('22'));
  assert.equal(a.message(), '41e57eb68a1a22519b1ddb63e60706d59432d73ada7f764ce32561fc97c88db60a');
  assert.equal(b.message(), '42bd16f4d8e3c7e2dc2fea5986f8d3b596263e8523e3988591fb6dd120f3a10a0b');
  const ka = a.finish(b.message());
  assert.equal(hex(ka), '699854c2e5a043241a8b924767c25538da14445a08f98cb4b22b4bc85d62e9ee');
  assert.equal(hex(b.finish(a.message())), hex(ka));
  const key = pairKey(ka);
  assert.equal(hex(key), '730ed94006e32f329d5f739322cf04cb2ba90edebd86dbfd5e58c455e3ededc8');
  const sealed = seal(key, 'offer', 'aaaaaaaaaaaa', 'bbbbbbbbbbbb', conn, sdp, new Uint8Array(12).fill(7));
  assert.equal(sealed, 'BwcHBwcHBwcHBwcHLYOs2ecnY434fHmbk0Lfh2Uhq5zcnyd2qBstATYZOCZmMhCStcrV2ROe1ZerKgByzVSdJFlN3GkFGiRnf2IurY3jE4CBn8flsCHoAB6qpQ==');
  assert.equal(open(key, 'offer', 'aaaaaaaaaaaa', 'bbbbbbbbbbbb', conn, sealed), sdp);
});

test('open_wrong_key_kind_ends_or_conn_is_null', () => {
  const key = new Uint8Array(32).fill(1);
  const s = seal(key, 'answer', 'a', 'b', conn, 'x');
  assert.equal(open(key, 'answer', 'a', 'b', conn, s), 'x');
  assert.equal(open(new Uint8Array(32), 'answer', 'a', 'b', conn, s), null);
  assert.equal(open(key, 'offer', 'a', 'b', conn, s), null);
  assert.equal(open(key, 'answer', 'b', 'a', conn, s), null);
  assert.equal(open(key, 'answer', 'a', 'b', null, s), null);
  assert.equal(open(key, 'answer', 'a', 'b', conn, 'not base64!'), null);
  assert.equal(open(key, 'answer', 'a', 'b', conn, 42), null);
});

test('spake2_wrong_secret_gives_other_keys', () => {
  const a = new Spake2('A', 'orbit-canvas-tiger', '7', 'a', 'b');
  const b = new Spake2('B', 'orbit-canvas-lion', '7', 'a', 'b');
  assert.notEqual(hex(a.finish(b.message())), hex(b.finish(a.message())));
});

test('spake2_malformed_message_is_6011', () => {
  const a = new Spake2('A', 's', '7', 'a', 'b');
  for (const bad of ['', '42', 'zz', '41' + '00'.repeat(32), '42' + 'ff'.repeat(32), 42]) {
    assert.throws(() => a.finish(bad), (e) => e instanceof CodedError && e.code === 6011, String(bad));
  }
});

test('parse_code_normalizes_like_the_native_peer', () => {
  assert.deepEqual(parseCode(' 7-Orbit  canvas--TIGER '), { route: '7', secret: 'orbit-canvas-tiger' });
  assert.equal(normalizeSecret('a b-C'), 'a-b-c');
  for (const bad of ['', '7', '7-', '7- - ', '-orbit', '7-orbit-can@vas', '7-élan', 'a.b-orbit', 'r'.repeat(65) + '-x', '7-' + 'w'.repeat(257)]) {
    assert.throws(() => parseCode(bad), (e) => e.code === 6008, bad);
  }
});

test('generate_secret_three_list_words', () => {
  const words = generateSecret().split('-');
  assert.equal(words.length, 3);
  for (const w of words) assert.match(w, /^[a-z]+$/);
});
