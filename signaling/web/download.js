// One file offered to the page: a person accepts or declines it; an accepted file arrives
// on a data channel `job/<job_id>`, is hashed as it arrives, and is handed to the person
// only once its BLAKE3 equals the offer's (docs/PROTOCOL.md "Data channels").
import { createBLAKE3 } from './vendor.js';
import { newUuid, jobLabel, BLOCK } from './wire.js';
import { sinkFor } from './store.js';

/** How long the page waits for the job's data channel after a `request`. */
const CHANNEL_WAIT_MS = 30000;

export class Download {
  constructor(session, link, offer) {
    this.session = session;
    this.from = link.id;
    this.fromName = link.name;
    this.offer = offer;
    this.fileId = offer.file_id;
    this.size = offer.size;
    this.expires = Date.now() + offer.ttl_ms;
    this.jobId = null;
    // available → requested → receiving → verifying → completed; or declined, cancelled,
    // failed; `withdrawn` for an offer the sender revoked before we took it.
    this.state = 'available';
    this.received = 0;
    this.code = null;
    this.message = null;
    this.sink = null;
    this.hasher = null;
    this.channel = null;
    this.url = null;
    this.lastProgress = 0;
    this.timer = null;
  }

  describe() {
    const o = this.offer;
    return {
      file_id: o.file_id,
      name: o.name,
      size: o.size,
      hash: o.hash,
      sender: this.from,
      sender_name: this.fromName,
      path: o.path,
      text: o.text,
      group: o.group,
    };
  }

  link() {
    return this.session.links.get(this.from);
  }

  get terminal() {
    return ['completed', 'failed', 'cancelled', 'declined', 'withdrawn'].includes(this.state);
  }

  async accept() {
    if (this.state !== 'available') return;
    if (Date.now() > this.expires) return this.end('failed', 6001, 'the offer expired', 'download-failed');
    this.state = 'requested';
    this.jobId = newUuid();
    this.session.changed();
    try {
      this.sink = await sinkFor(this.jobId, this.size);
      this.hasher = await createBLAKE3();
      this.hasher.init();
    } catch (e) {
      const code = e.code ?? 5089;
      this.link()?.sendControl({ type: 'error', file_id: this.fileId, code, message: String(e.message).slice(0, 512) });
      return this.end('failed', code, e.message, 'download-failed');
    }
    if (this.state !== 'requested') return; // cancelled meanwhile
    this.request();
  }

  decline() {
    if (this.state !== 'available') return;
    this.link()?.sendControl({ type: 'decline', file_id: this.fileId });
    this.end('declined', null, 'declined', 'download-cancelled');
  }

  /** The person cancels a running download. */
  cancel() {
    if (this.state !== 'requested' && this.state !== 'receiving') return;
    this.link()?.sendControl({ type: 'cancel', job_id: this.jobId });
    this.end('cancelled', 6009, 'cancelled', 'download-cancelled');
  }

  /** Ask for the bytes from what we hold (0, or more after a lost connection). */
  request() {
    clearTimeout(this.timer);
    const sent = this.link()?.sendControl({ type: 'request', job_id: this.jobId, file_id: this.fileId, offset: this.received });
    // No channel within the wait: ask again (as for a connection that comes back).
    if (sent) this.timer = setTimeout(() => !this.channel && this.isWaiting() && this.request(), CHANNEL_WAIT_MS);
  }

  isWaiting() {
    return this.state === 'requested' || this.state === 'receiving';
  }

  /** The control channel to the sender is open again: continue where we are. */
  linkBack(link) {
    if (link.id === this.from && this.isWaiting() && !this.channel) this.request();
  }

  takesChannel(label) {
    return this.jobId !== null && label === jobLabel(this.jobId) && this.isWaiting();
  }

  attach(dc) {
    clearTimeout(this.timer);
    if (this.channel) this.channel.close();
    this.channel = dc;
    dc.binaryType = 'arraybuffer';
    dc.onmessage = (ev) => this.channel === dc && this.onData(ev.data);
    dc.onclose = () => {
      if (this.channel === dc) this.channel = null; // asked for again when the link is back
    };
    if (this.state === 'requested') {
      this.state = 'receiving';
      this.session.emit('download-started', { ...this.ids(), offset: this.received });
    }
  }

  onData(data) {
    if (this.state !== 'receiving') return;
    if (typeof data === 'string') return this.fail(6005, 'a text message on the job channel');
    const bytes = new Uint8Array(data);
    if (this.received + bytes.length > this.size) return this.fail(6005, 'more bytes than the offered size');
    this.hasher.update(bytes);
    this.sink.write(bytes);
    this.received += bytes.length;
    if (this.received - this.lastProgress >= BLOCK || this.received === this.size) {
      this.lastProgress = this.received;
      this.link()?.sendControl({ type: 'progress', job_id: this.jobId, received: this.received });
      this.session.changed();
    }
    if (this.received === this.size) this.finish();
  }

  async finish() {
    this.state = 'verifying';
    const dc = this.channel;
    this.channel = null;
    dc?.close();
    this.session.changed();
    const digest = this.hasher.digest('hex');
    if (digest !== this.offer.hash) {
      return this.fail(5100, 'the received bytes do not match the offered BLAKE3 hash: discarded');
    }
    let file;
    try {
      file = await this.sink.finish();
    } catch (e) {
      return this.fail(5090, `cannot save: ${e.message}`);
    }
    this.url = URL.createObjectURL(file);
    this.link()?.sendControl({ type: 'done', job_id: this.jobId, ok: true });
    this.end('completed', null, null, 'download-completed');
  }

  /** The job failed here: the sender gets `done` with the code. */
  fail(code, message) {
    if (this.terminal) return;
    this.link()?.sendControl({ type: 'done', job_id: this.jobId, ok: false, code });
    this.end('failed', code, message, 'download-failed');
  }

  /** A message about our job from the sender. */
  onMessage(m) {
    if (this.terminal) return;
    if (m.type === 'error') this.fail(m.code, m.message || `refused by the sender (${m.code})`);
    else if (m.type === 'cancel') this.end('failed', 6004, 'cancelled by the sender', 'download-failed');
  }

  revoked() {
    if (this.state === 'available') this.end('withdrawn', 6004, 'withdrawn by the sender', 'download-failed');
  }

  peerGone(id) {
    if (id !== this.from || this.terminal) return;
    if (this.state === 'available') this.end('withdrawn', 6003, 'the sender left', 'download-failed');
    else this.end('failed', 6003, 'the sender left before the file was complete', 'download-failed');
  }

  ids() {
    return { job_id: this.jobId, file_id: this.fileId, name: this.offer.name, size: this.size, sender: this.from };
  }

  end(state, code, message, event) {
    clearTimeout(this.timer);
    this.state = state;
    this.code = code;
    this.message = message;
    const dc = this.channel;
    this.channel = null;
    dc?.close();
    if (state !== 'completed' && this.sink) this.sink.discard();
    const detail = { ...this.ids() };
    if (code !== null) detail.code = code;
    if (message !== null && state !== 'completed') detail.message = message;
    if (state === 'declined') detail.declined = true;
    this.session.emit(event, detail);
  }
}
