// Codes, peer authentication (SPAKE2) and sealing of signaling data, exactly as
// docs/PROTOCOL.md "Codes and tickets" and "Peer authentication" define them. No I/O:
// every function is pure but for the random numbers it draws.
import { ed25519, hkdf, sha256, gcm, wordlist } from './vendor.js';

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export const MAX_SECRET_LEN = 256;
export const MAX_ROUTE_LEN = 64;

/** A coded failure, with the same numeric codes as the native peers. */
export class CodedError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------
// Codes

/** The canonical secret: words of ASCII letters and digits, lowercase, joined by `-`. */
export function normalizeSecret(secret) {
  const words = [];
  for (const word of secret.split(/[-\s]/u)) {
    if (word === '') continue;
    if (!/^[A-Za-z0-9]+$/.test(word)) {
      throw new CodedError(6008, 'invalid code secret: words are made of letters A-Z and digits');
    }
    words.push(word.toLowerCase());
  }
  const joined = words.join('-');
  if (joined === '') throw new CodedError(6008, 'a code needs a secret after its first "-", e.g. 7-orbit-canvas-tiger');
  if (joined.length > MAX_SECRET_LEN) throw new CodedError(6008, 'invalid code secret: longer than 256 characters');
  return joined;
}

/** `ROUTE-SECRET` → `{route, secret}` (secret normalized); throws CodedError 6008. */
export function parseCode(text) {
  const s = text.trim();
  const dash = s.indexOf('-');
  if (dash < 0) throw new CodedError(6008, 'invalid code: expected ROUTE-SECRET, e.g. 7-orbit-canvas-tiger');
  const route = s.slice(0, dash);
  if (route.length < 1 || route.length > MAX_ROUTE_LEN || !/^[A-Za-z0-9_]+$/.test(route)) {
    throw new CodedError(6008, 'invalid code: the part before the first "-" is 1 to 64 letters, digits or "_"');
  }
  return { route, secret: normalizeSecret(s.slice(dash + 1)) };
}

/** A fresh secret of `words` words from the BIP-39 English list (11 bits each). */
export function generateSecret(words = 3) {
  const out = [];
  const r = new Uint16Array(1);
  while (out.length < words) {
    crypto.getRandomValues(r);
    // 65536 is a multiple of 2048: the low 11 bits are uniform.
    out.push(wordlist[r[0] & 2047]);
  }
  return out.join('-');
}

// ---------------------------------------------------------------------------------------
// SPAKE2 over Ed25519, as RustCrypto's `spake2` 0.4 and python-spake2

const P = ed25519.Point;
const L = P.Fn.ORDER;
const M = P.fromHex('15cfd18e385952982b6a8f8c7854963b58e34388c8e6dae891db756481a02312');
const N = P.fromHex('f04f2e7eb734b2a8f8b472eaf9c3c632576ac64aea650b496a8a20ff00e583c3');

export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

export function unhex(text) {
  if (typeof text !== 'string' || text.length % 2 !== 0 || !/^[0-9a-f]*$/.test(text)) {
    throw new CodedError(6011, 'not lowercase hex');
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function cat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) {
    out.set(p, i);
    i += p.length;
  }
  return out;
}

const bigOf = (bytes) => (bytes.length === 0 ? 0n : BigInt('0x' + hex(bytes)));

function randomScalar() {
  // 64 uniform bytes reduced mod l: bias below 2^-250.
  const b = new Uint8Array(64);
  crypto.getRandomValues(b);
  const s = bigOf(b) % L;
  return s === 0n ? 1n : s;
}

/** Our half of one pair's SPAKE2 exchange. `side` is 'A' (smaller client ID) or 'B'. */
export class Spake2 {
  constructor(side, secret, route, idA, idB, scalar = randomScalar()) {
    this.side = side;
    this.password = enc.encode(secret);
    this.idA = enc.encode(`${route}/${idA}`);
    this.idB = enc.encode(`${route}/${idB}`);
    this.w = bigOf(hkdf(sha256, this.password, new Uint8Array(0), enc.encode('SPAKE2 pw'), 48)) % L;
    this.x = scalar;
    const blind = side === 'A' ? M : N;
    this.mine = P.BASE.multiply(this.x).add(blind.multiply(this.w));
  }

  /** Our message, 33 bytes as 66 hex digits (`pake.msg`). */
  message() {
    return (this.side === 'A' ? '41' : '42') + hex(this.mine.toBytes());
  }

  /** The SPAKE2 key from the other side's `pake.msg`; throws CodedError 6011 if malformed. */
  finish(theirHex) {
    const bytes = unhex(theirHex);
    const want = this.side === 'A' ? 0x42 : 0x41;
    if (bytes.length !== 33 || bytes[0] !== want) throw new CodedError(6011, 'malformed PAKE message');
    let theirs;
    try {
      theirs = P.fromBytes(bytes.subarray(1));
    } catch {
      throw new CodedError(6011, 'PAKE message is not a curve point');
    }
    const unblind = this.side === 'A' ? N : M;
    const K = theirs.subtract(unblind.multiply(this.w)).multiply(this.x);
    const [X, Y] = this.side === 'A' ? [this.mine, theirs] : [theirs, this.mine];
    return sha256(
      cat(sha256(this.password), sha256(this.idA), sha256(this.idB), X.toBytes(), Y.toBytes(), K.toBytes()),
    );
  }
}

/** The pair key that seals the signaling data: HKDF-SHA256 of the SPAKE2 key. */
export const pairKey = (spakeKey) => hkdf(sha256, spakeKey, undefined, enc.encode('peershare/2 seal'), 32);

// ---------------------------------------------------------------------------------------
// Sealing: AES-256-GCM, random 12-byte nonce, associated data naming kind, ends and conn

const aad = (kind, from, to, conn) => enc.encode(`peershare/2 ${kind}\n${from}\n${to}\n${conn ?? ''}`);

function b64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function unb64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Seal `plaintext` (a string) for `kind` from `from` to `to` on attempt `conn`. */
export function seal(key, kind, from, to, conn, plaintext, nonce = null) {
  const iv = nonce ?? crypto.getRandomValues(new Uint8Array(12));
  const ct = gcm(key, iv, aad(kind, from, to, conn)).encrypt(enc.encode(plaintext));
  return b64(cat(iv, ct));
}

/** Open a `sealed` field; `null` if it does not open (wrong key, data, ends or conn). */
export function open(key, kind, from, to, conn, sealed) {
  try {
    if (typeof sealed !== 'string') return null;
    const raw = unb64(sealed);
    if (raw.length < 12 + 16) return null;
    const pt = gcm(key, raw.subarray(0, 12), aad(kind, from, to, conn)).decrypt(raw.subarray(12));
    return dec.decode(pt);
  } catch {
    return null;
  }
}
