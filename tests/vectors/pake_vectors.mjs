// Check the peer-authentication test vectors of docs/PROTOCOL.md in JavaScript, the way a
// browser page computes them: @noble/curves (Ed25519 arithmetic) and @noble/hashes (SHA-256,
// HKDF) for SPAKE2, WebCrypto for AES-256-GCM. Run by .ci/run: `npm ci && node pake_vectors.mjs`.
import { ed25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';

const subtle = (globalThis.crypto ?? webcrypto).subtle;

const P = ed25519.Point;
const L = P.Fn.ORDER;
const enc = (s) => new TextEncoder().encode(s);
const hex = (b) => Buffer.from(b).toString('hex');
const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
};
// The scalar whose little-endian bytes are 31 x `fill` and a 0.
const scalar = (fill) => BigInt('0x' + hex(new Uint8Array([0, ...Array(31).fill(fill)]))) % L;

const secret = enc('orbit-canvas-tiger');
const idA = enc('7/aaaaaaaaaaaa'), idB = enc('7/bbbbbbbbbbbb');
// Password scalar: HKDF-SHA256(salt empty, info "SPAKE2 pw", 48 bytes), big-endian, mod l.
const w = BigInt('0x' + hex(hkdf(sha256, secret, new Uint8Array(0), enc('SPAKE2 pw'), 48))) % L;
const M = P.fromHex('15cfd18e385952982b6a8f8c7854963b58e34388c8e6dae891db756481a02312');
const N = P.fromHex('f04f2e7eb734b2a8f8b472eaf9c3c632576ac64aea650b496a8a20ff00e583c3');
const x = scalar(0x11), y = scalar(0x22);
const X = P.BASE.multiply(x).add(M.multiply(w));
const Y = P.BASE.multiply(y).add(N.multiply(w));
const K = Y.subtract(N.multiply(w)).multiply(x);
assert.ok(K.equals(X.subtract(M.multiply(w)).multiply(y)));
const key = sha256(cat(sha256(secret), sha256(idA), sha256(idB), X.toBytes(), Y.toBytes(), K.toBytes()));
const pair = hkdf(sha256, key, undefined, enc('peershare/2 seal'), 32);

const sdp = enc('v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\na=fingerprint:sha-256 AB:CD\r\n');
const aad = enc('peershare/2 offer\naaaaaaaaaaaa\nbbbbbbbbbbbb\n00000000-0000-4000-8000-000000000001');
const nonce = new Uint8Array(12).fill(7);
const aes = await subtle.importKey('raw', pair, 'AES-GCM', false, ['encrypt', 'decrypt']);
const ct = new Uint8Array(await subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad }, aes, sdp));
const sealed = Buffer.from(cat(nonce, ct)).toString('base64');

assert.equal('41' + hex(X.toBytes()), '41e57eb68a1a22519b1ddb63e60706d59432d73ada7f764ce32561fc97c88db60a');
assert.equal('42' + hex(Y.toBytes()), '42bd16f4d8e3c7e2dc2fea5986f8d3b596263e8523e3988591fb6dd120f3a10a0b');
assert.equal(hex(key), '699854c2e5a043241a8b924767c25538da14445a08f98cb4b22b4bc85d62e9ee');
assert.equal(hex(pair), '730ed94006e32f329d5f739322cf04cb2ba90edebd86dbfd5e58c455e3ededc8');
assert.equal(sealed, 'BwcHBwcHBwcHBwcHLYOs2ecnY434fHmbk0Lfh2Uhq5zcnyd2qBstATYZOCZmMhCStcrV2ROe1ZerKgByzVSdJFlN3GkFGiRnf2IurY3jE4CBn8flsCHoAB6qpQ==');
console.log('pake vectors (JavaScript): ok');
