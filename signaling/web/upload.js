// One file the person shares from the page: hashed, offered to every member (or the chosen
// ones), served on a data channel per `request` from any offset (a native recipient
// resumes as from a native sender), with the sender bounds of docs/PROTOCOL.md.
import { createBLAKE3 } from './vendor.js';
import { newUuid, jobLabel, CHUNK, BLOCK } from './wire.js';

/** How long an offer stays valid. */
const TTL_MS = 24 * 3600 * 1000;
/** Backpressure: stop sending above HIGH buffered bytes, go on below LOW. */
const HIGH = 4 * 1024 * 1024;
const LOW = 1024 * 1024;
/** Read size from the File. */
const READ = 1024 * 1024;
/** Jobs per recipient and file at once, and per recipient in all (the native bounds). */
const MAX_JOBS_PER_PEER = 1024;
export const MAX_STREAMS_PER_PEER = 8;
/** Block-hash requests waiting or being answered per recipient, and hashed at once. */
const MAX_HASHES_WAITING = 1024;
export const MAX_HASHING = 2;
/** How long a recipient that left may come back (restarted, with the same job IDs)
 * before its outcome is `failed` 6003: the native peers' resume grace. */
const RESUME_GRACE_MS = 120 * 1000;

const TERMINAL = ['delivered', 'declined', 'failed'];

/** Whether the member's `hello` said it only sends files: it is no recipient. */
export function onlySends(link) {
  return Array.isArray(link.hello?.features) && link.hello.features.includes('send-only');
}

/** At most `max` holders per key (a recipient); the others wait in order. */
export class Slots {
  constructor(max) {
    this.max = max;
    this.keys = new Map(); // key → {busy, waiting}
  }

  async take(key) {
    const s = this.keys.get(key) ?? { busy: 0, waiting: [] };
    this.keys.set(key, s);
    if (s.busy < this.max) s.busy++;
    else await new Promise((resolve) => s.waiting.push(resolve)); // handed over by give
  }

  give(key) {
    const s = this.keys.get(key);
    if (!s) return;
    const next = s.waiting.shift();
    if (next) next();
    else if (--s.busy === 0) this.keys.delete(key);
  }
}

export class Upload {
  constructor(session, file, audience, group) {
    this.session = session;
    this.file = file;
    this.fileId = newUuid();
    this.name = file.name;
    this.size = file.size;
    this.audience = audience; // null: everyone
    this.group = group;
    this.hash = null;
    this.hashed = 0;
    this.state = 'hashing'; // → shared → stopped; or failed
    this.code = null;
    this.expires = Date.now() + TTL_MS;
    this.outcomes = new Map(); // peer ID → {name, state, code, sent}
    this.jobs = new Map(); // job ID → {peer, dc, stopped, offset}
    this.hashesWaiting = new Map(); // peer ID → count
    this.ended = false;
  }

  async start() {
    try {
      const h = await createBLAKE3();
      h.init();
      for (let pos = 0; pos < this.size; pos += READ) {
        const bytes = new Uint8Array(await this.file.slice(pos, Math.min(pos + READ, this.size)).arrayBuffer());
        h.update(bytes);
        this.hashed = pos + bytes.length;
        this.session.changed();
      }
      this.hash = h.digest('hex');
    } catch (e) {
      this.state = 'failed';
      this.code = 5089;
      this.session.emit('upload-failed', { file_id: this.fileId, name: this.name, size: this.size, code: 5089, message: `cannot read the file: ${e.message}` });
      return;
    }
    if (this.state !== 'hashing') return;
    this.state = 'shared';
    this.session.emit('upload-started', { file_id: this.fileId, name: this.name, size: this.size, hash: this.hash });
    for (const link of this.session.links.values()) this.offerTo(link);
  }

  inAudience(id) {
    return this.audience === null || this.audience.has(id);
  }

  /** Offer the file to a member whose control channel is open (again). */
  offerTo(link) {
    if (this.state !== 'shared' || link.state !== 'connected' || !this.inAudience(link.id)) return;
    const ttl = Math.max(0, this.expires - Date.now());
    if (ttl === 0) return;
    const offer = { type: 'offer', file_id: this.fileId, name: this.name, size: this.size, hash: this.hash, ttl_ms: ttl, group: this.group };
    if (!link.sendControl(offer)) return;
    if (!this.outcomes.has(link.id) && !onlySends(link)) {
      this.outcomes.set(link.id, { name: link.name, state: 'offered', code: null, sent: 0 });
      this.session.changed();
    }
  }

  hasJob(peer, jobId) {
    const job = this.jobs.get(jobId);
    return !!job && job.peer === peer;
  }

  refuse(link, m, code, message) {
    const e = { type: 'error', file_id: this.fileId, code, message };
    if (m.job_id !== undefined) e.job_id = m.job_id;
    link.sendControl(e);
  }

  /** The check of a `request` or `hashes-request`: null if it may be served, else a code. */
  refusal(link, m) {
    if (this.state === 'stopped') return [6004, 'the sender stopped sharing this file'];
    if (this.state !== 'shared') return [1181, 'no such file is shared'];
    if (!this.inAudience(link.id)) return [5091, 'this file is not shared with you'];
    if (onlySends(link)) return [5091, 'a peer that only sends receives nothing'];
    if (Date.now() > this.expires) return [6001, 'the offer expired'];
    if (this.outcomes.get(link.id)?.state === 'delivered') return [5101, 'you have this file already'];
    return null;
  }

  onMessage(link, m) {
    const outcome = this.outcomes.get(link.id);
    switch (m.type) {
      case 'request': {
        const no = this.refusal(link, m);
        if (no) return this.refuse(link, m, ...no);
        if (m.offset > this.size) return this.refuse(link, m, 6005, 'offset past the end of the file');
        this.takeOver(link, m.job_id);
        const mine = [...this.jobs.entries()].filter(([, j]) => j.peer === link.id);
        if (mine.some(([id, j]) => id !== m.job_id && j.dc)) return this.refuse(link, m, 6010, 'this file is being sent to you already');
        for (const [id] of mine) if (id !== m.job_id) this.jobs.delete(id);
        const all = [...this.session.uploads.values()].reduce((n, u) => n + u.jobsOf(link.id), 0);
        if (!this.jobs.has(m.job_id) && all >= MAX_JOBS_PER_PEER) return this.refuse(link, m, 6010, 'too many jobs');
        return this.serve(link, m.job_id, m.offset);
      }
      case 'hashes-request':
        return this.answerHashes(link, m);
      case 'decline':
        if (outcome && !TERMINAL.includes(outcome.state)) this.outcome(link.id, m.have ? 'delivered' : 'declined', null);
        return;
      case 'error':
        if (outcome && !TERMINAL.includes(outcome.state)) this.outcome(link.id, 'failed', m.code);
        if (m.job_id) this.stopJob(m.job_id);
        return;
      case 'progress':
        if (outcome && this.hasJob(link.id, m.job_id)) {
          outcome.sent = Math.min(m.received, this.size);
          this.session.changed();
        }
        return;
      case 'done':
        this.stopJob(m.job_id, false);
        this.jobs.delete(m.job_id);
        if (outcome && !TERMINAL.includes(outcome.state)) this.outcome(link.id, m.ok ? 'delivered' : 'failed', m.ok ? null : (m.code ?? 1182));
        return;
      case 'cancel':
        this.stopJob(m.job_id);
        this.jobs.delete(m.job_id);
        if (outcome && !TERMINAL.includes(outcome.state)) this.outcome(link.id, 'failed', 6004);
        return;
      default:
        return;
    }
  }

  jobsOf(peer) {
    let n = 0;
    for (const j of this.jobs.values()) if (j.peer === peer) n++;
    return n;
  }

  serve(link, jobId, offset) {
    this.stopJob(jobId);
    const dc = link.openChannel(jobLabel(jobId));
    if (!dc) return this.refuse(link, { job_id: jobId }, 6003, 'the connection is not ready');
    const job = { peer: link.id, dc, stopped: false, offset };
    this.jobs.set(jobId, job);
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = LOW;
    dc.onopen = () => this.pump(jobId, job, link);
    dc.onclose = () => {
      job.dc = null;
    };
    const outcome = this.outcomes.get(link.id);
    if (outcome) {
      outcome.state = 'sending';
      outcome.sent = offset;
      this.session.changed();
    }
  }

  /** Stream the file from the job's offset, once the recipient has a free stream slot. */
  async pump(jobId, job, link) {
    await this.session.streams.take(job.peer);
    const dc = job.dc;
    try {
      let pos = job.offset;
      while (pos < this.size) {
        if (job.stopped || !dc || dc.readyState !== 'open') return;
        if (dc.bufferedAmount > HIGH) {
          await new Promise((resolve) => {
            dc.onbufferedamountlow = resolve;
            dc.addEventListener('close', resolve, { once: true });
          });
          continue;
        }
        let bytes;
        try {
          bytes = new Uint8Array(await this.file.slice(pos, Math.min(pos + READ, this.size)).arrayBuffer());
        } catch {
          // Chromium refuses to read a File whose file changed since it was picked.
          this.refuse(link, { job_id: jobId }, 5100, `${this.name} changed since it was offered`);
          this.stopJob(jobId);
          if (this.outcomes.has(link.id)) this.outcome(link.id, 'failed', 5100);
          return;
        }
        if (job.stopped || dc.readyState !== 'open') return;
        for (let i = 0; i < bytes.length; i += CHUNK) dc.send(bytes.subarray(i, Math.min(i + CHUNK, bytes.length)));
        pos += bytes.length;
      }
    } finally {
      this.session.streams.give(job.peer);
    }
  }

  async answerHashes(link, m) {
    const no = this.refusal(link, m);
    if (no) return this.refuse(link, m, ...no);
    if (m.offset + m.length > this.size) return this.refuse(link, m, 6005, 'range past the end of the file');
    const waiting = this.hashesWaiting.get(link.id) ?? 0;
    if (waiting >= MAX_HASHES_WAITING) return this.refuse(link, m, 6010, 'too many hash requests');
    this.hashesWaiting.set(link.id, waiting + 1);
    try {
      await this.session.hashing.take(link.id);
      const h = await createBLAKE3();
      const hashes = [];
      for (let pos = m.offset; pos < m.offset + m.length; pos += BLOCK) {
        const end = Math.min(pos + BLOCK, m.offset + m.length);
        h.init();
        h.update(new Uint8Array(await this.file.slice(pos, end).arrayBuffer()));
        hashes.push(h.digest('hex'));
      }
      link.sendControl({ type: 'hashes', job_id: m.job_id, file_id: this.fileId, offset: m.offset, length: m.length, hashes });
    } catch {
      this.refuse(link, m, 5100, `${this.name} changed since it was offered`);
    } finally {
      this.hashesWaiting.set(link.id, (this.hashesWaiting.get(link.id) ?? 1) - 1);
      this.session.hashing.give(link.id);
    }
  }

  stopJob(jobId, close = true) {
    const job = this.jobs.get(jobId);
    if (!job) return;
    job.stopped = true;
    if (close && job.dc) job.dc.close();
    job.dc = null;
  }

  /** The connection to a member is lost: its streams stop, its jobs wait for a resume. */
  linkLost(link) {
    for (const job of this.jobs.values()) {
      if (job.peer !== link.id) continue;
      job.stopped = true;
      job.dc = null;
    }
  }

  /**
   * A recipient left the session. Its streams stop; its jobs and its pending outcome wait
   * for the grace period, in which a restarted recipient (a new client ID) resumes them
   * under the same job IDs; then the outcome is `failed` 6003.
   */
  peerGone(id) {
    for (const job of this.jobs.values()) {
      if (job.peer !== id) continue;
      job.stopped = true;
      job.dc = null;
    }
    setTimeout(() => {
      for (const [jobId, job] of this.jobs) if (job.peer === id) this.jobs.delete(jobId);
      const o = this.outcomes.get(id);
      if (o && !TERMINAL.includes(o.state)) this.outcome(id, 'failed', 6003);
    }, RESUME_GRACE_MS);
  }

  /** A request for a job another (departed) client started: the new client takes it and
   * the old client's pending outcome over. */
  takeOver(link, jobId) {
    const job = this.jobs.get(jobId);
    if (!job || job.peer === link.id || this.session.links.get(job.peer)?.state === 'connected') return;
    const old = this.outcomes.get(job.peer);
    if (old && !TERMINAL.includes(old.state)) this.outcomes.delete(job.peer);
    job.peer = link.id;
    if (!this.outcomes.has(link.id)) this.outcomes.set(link.id, { name: link.name, state: 'offered', code: null, sent: 0 });
  }

  /** The person stops sharing: running jobs are cancelled, the offer revoked. */
  stop() {
    if (this.state !== 'shared' && this.state !== 'hashing') return;
    const was = this.state;
    this.state = 'stopped';
    for (const [jobId, job] of this.jobs) {
      this.session.links.get(job.peer)?.sendControl({ type: 'cancel', job_id: jobId, code: 6004 });
      this.stopJob(jobId);
    }
    this.jobs.clear();
    for (const [id, o] of this.outcomes) {
      this.session.links.get(id)?.sendControl({ type: 'revoke', file_id: this.fileId });
      if (!TERMINAL.includes(o.state)) {
        o.state = 'failed';
        o.code = 6004;
      }
    }
    if (was === 'shared' && !this.ended) {
      this.ended = true;
      this.session.emit('upload-cancelled', { file_id: this.fileId, name: this.name, size: this.size });
    }
    this.session.changed();
  }

  outcome(peer, state, code) {
    const o = this.outcomes.get(peer);
    o.state = state;
    o.code = code;
    if (state === 'delivered') o.sent = this.size;
    const ev = { file_id: this.fileId, name: this.name, peer, outcome: state, bytes_sent: o.sent };
    if (code) ev.code = code;
    this.session.emit('recipient-outcome', ev);
    this.settle();
  }

  /** `link`'s `hello` said it only sends: it is no recipient of this file, even if the
   * offer reached it first (it answers none). */
  notARecipient(link) {
    const o = this.outcomes.get(link.id);
    if (!o || TERMINAL.includes(o.state)) return;
    this.outcomes.delete(link.id);
    this.session.changed();
    this.settle();
  }

  /** The upload ends once every recipient has an outcome. */
  settle() {
    const all = [...this.outcomes.values()];
    if (this.ended || all.length === 0 || !all.every((x) => TERMINAL.includes(x.state))) return;
    this.ended = true;
    const outcomes = [...this.outcomes].map(([id, x]) => ({ peer: id, name: x.name, outcome: x.state, ...(x.code ? { code: x.code } : {}) }));
    const ids = { file_id: this.fileId, name: this.name, size: this.size, outcomes };
    if (all.some((x) => x.state !== 'failed')) this.session.emit('upload-completed', ids);
    else this.session.emit('upload-failed', { ...ids, code: all[0].code ?? 1182 });
  }
}
