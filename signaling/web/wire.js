// Control-channel messages of docs/PROTOCOL.md "Peer control channel": decoding with the
// document's bounds (a malformed message is a CodedError 6005, never an exception of
// another kind), and the messages the page sends. No I/O.
import { CodedError } from './crypto.js';

export const MAX_CONTROL_BYTES = 16 * 1024;
export const PROTOCOL_VERSION = 1;
/** What the page supports of the optional protocol parts (see `hello.features`). */
export const FEATURES = ['block-hashes'];
export const BLOCK = 1024 * 1024;
export const MAX_HASHES_LENGTH = 128 * 1024 * 1024;
/** Largest data-channel message a recipient must take; the page sends this size. */
export const CHUNK = 64 * 1024;
export const MAX_NAME_BYTES = 255 * 4;
export const MAX_PATH_BYTES = 4096;
export const MAX_LABEL_BYTES = 256;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HASH = /^[0-9a-f]{64}$/;
const utf8 = new TextEncoder();

const bad = (why) => new CodedError(6005, why);

function uuid(m, field) {
  const v = m[field];
  if (typeof v !== 'string' || !UUID.test(v)) throw bad(`${field} is not a lowercase UUID`);
  return v;
}

function u64(m, field, optional = false) {
  const v = m[field];
  if (v === undefined && optional) return undefined;
  if (!Number.isSafeInteger(v) || v < 0) throw bad(`${field} is not a byte count`);
  return v;
}

function str(m, field, maxBytes, optional = false) {
  const v = m[field];
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'string' || utf8.encode(v).length > maxBytes) throw bad(`${field} is not a string of at most ${maxBytes} bytes`);
  return v;
}

function bool(m, field) {
  const v = m[field];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw bad(`${field} is not a boolean`);
  return v;
}

function code(m, field, optional = true) {
  const v = m[field];
  if (v === undefined && optional) return undefined;
  if (!Number.isInteger(v) || v < 0 || v > 65535) throw bad(`${field} is not a code`);
  return v;
}

/**
 * One received control message (a string) → a plain object with validated fields.
 * Throws CodedError 6005 for anything the document calls malformed, with a message fit to
 * send back in an `error`. Unknown fields are dropped.
 */
export function decodeControl(text) {
  if (typeof text !== 'string') throw bad('a binary message on the control channel');
  if (utf8.encode(text).length > MAX_CONTROL_BYTES) throw bad('control message above 16 KiB');
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    throw bad('not JSON');
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m) || typeof m.type !== 'string') {
    throw bad('not a JSON object with a string "type"');
  }
  switch (m.type) {
    case 'hello': {
      if (!Number.isInteger(m.version)) throw bad('version is not an integer');
      const features = Array.isArray(m.features) ? m.features.filter((f) => typeof f === 'string').slice(0, 64) : [];
      return { type: 'hello', version: m.version, name: str(m, 'name', 1024), features };
    }
    case 'offer': {
      const out = {
        type: 'offer',
        file_id: uuid(m, 'file_id'),
        name: str(m, 'name', MAX_NAME_BYTES),
        size: u64(m, 'size'),
        hash: str(m, 'hash', 64),
        ttl_ms: u64(m, 'ttl_ms'),
        path: str(m, 'path', MAX_PATH_BYTES, true),
        text: bool(m, 'text'),
        executable: bool(m, 'executable'),
        group: null,
      };
      if (!HASH.test(out.hash)) throw bad('hash is not 64 lowercase hex digits');
      if (m.group !== undefined && m.group !== null) {
        const g = m.group;
        if (typeof g !== 'object' || Array.isArray(g)) throw bad('group is not an object');
        out.group = {
          id: uuid(g, 'id'),
          count: u64(g, 'count'),
          index: u64(g, 'index'),
          label: str(g, 'label', MAX_LABEL_BYTES, true),
          bytes: u64(g, 'bytes', true),
        };
      }
      return out;
    }
    case 'revoke':
      return { type: 'revoke', file_id: uuid(m, 'file_id') };
    case 'dirs':
      return { type: 'dirs' };
    case 'request':
      return { type: 'request', job_id: uuid(m, 'job_id'), file_id: uuid(m, 'file_id'), offset: u64(m, 'offset') };
    case 'decline':
      return { type: 'decline', file_id: uuid(m, 'file_id'), have: bool(m, 'have') };
    case 'hashes-request': {
      const out = {
        type: 'hashes-request',
        job_id: uuid(m, 'job_id'),
        file_id: uuid(m, 'file_id'),
        offset: u64(m, 'offset'),
        length: u64(m, 'length'),
      };
      if (out.length < 1 || out.length > MAX_HASHES_LENGTH) throw bad('length out of range');
      return out;
    }
    case 'hashes': {
      const out = { type: 'hashes', job_id: uuid(m, 'job_id'), file_id: uuid(m, 'file_id') };
      return out; // The page never asks for hashes; an answer is ignored.
    }
    case 'progress':
      return { type: 'progress', job_id: uuid(m, 'job_id'), received: u64(m, 'received') };
    case 'done': {
      if (typeof m.ok !== 'boolean') throw bad('ok is not a boolean');
      return { type: 'done', job_id: uuid(m, 'job_id'), ok: m.ok, code: code(m, 'code') };
    }
    case 'cancel':
      return { type: 'cancel', job_id: uuid(m, 'job_id'), code: code(m, 'code') };
    case 'error': {
      const out = { type: 'error', code: code(m, 'code', false), message: str(m, 'message', 4096, true) ?? '' };
      if (m.job_id !== undefined) out.job_id = uuid(m, 'job_id');
      if (m.file_id !== undefined) out.file_id = uuid(m, 'file_id');
      return out;
    }
    case 'batch-request':
      // The page does not list `batch`: a peer that sends it anyway is answered 6005.
      throw bad('batch-request to a peer without "batch"');
    default:
      throw bad(`unknown message type ${JSON.stringify(m.type.slice(0, 32))}`);
  }
}

export const encode = (m) => JSON.stringify(m);

/** `text` cut to at most `max` UTF-8 bytes, on a character boundary. */
export function truncateBytes(text, max) {
  let out = '';
  let n = 0;
  for (const ch of text) {
    n += utf8.encode(ch).length;
    if (n > max) break;
    out += ch;
  }
  return out;
}

/** A fresh lowercase UUID v4 (crypto.randomUUID needs a secure context; this does not). */
export function newUuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The label of a job's data channel, and the job ID in one (or null). */
export const jobLabel = (jobId) => `job/${jobId}`;
export function jobOfLabel(label) {
  if (!label.startsWith('job/')) return null;
  const id = label.slice(4);
  return UUID.test(id) ? id : null;
}

/** What a person sees of a name from a peer: no control or bidi-override characters. */
export function shown(name) {
  // eslint-disable-next-line no-control-regex
  return String(name).replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, '\uFFFD');
}

/** The name a file is saved under: the last path component, with nothing a file system or
 * a download prompt would read as a path or a device. */
export function saveName(name) {
  let n = shown(name).split(/[/\\]/).pop().replace(/[<>:"|?*\uFFFD]/g, '_').trim();
  if (n === '' || n === '.' || n === '..') n = 'file';
  return n.slice(0, 200);
}

export function humanSize(bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${bytes} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}
