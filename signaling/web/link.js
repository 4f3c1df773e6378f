// One other member of the session: the pair's SPAKE2 exchange, the sealed offer, answer
// and candidates, the RTCPeerConnection and its `control` channel (docs/PROTOCOL.md "Peer
// authentication"). It reports to its owner (the Session) through `owner.linkEvent`.
import { Spake2, pairKey, seal, open, CodedError } from './crypto.js';
import { newUuid } from './wire.js';
import { setupRestart } from './rejoin.js';

/** How long the page waits for a lost connection to come back before it rebuilds it. */
const REBUILD_AFTER_MS = 4000;

export class Link {
  /**
   * @param owner   the Session: `send(to, data)`, `linkEvent(link, type, detail)`,
   *                `iceServers`, `clientId`, `route`, `secret`, `burnt`
   * @param peer    `{id, name, relay_only}` from `welcome.peers` or `peer-joined`
   */
  constructor(owner, peer) {
    this.owner = owner;
    this.id = peer.id;
    this.name = peer.name;
    this.offerer = owner.clientId < peer.id;
    const [idA, idB] = this.offerer ? [owner.clientId, peer.id] : [peer.id, owner.clientId];
    this.spake = new Spake2(this.offerer ? 'A' : 'B', owner.secret, owner.route, idA, idB);
    this.key = null;
    this.theirPake = false;
    this.authenticated = false;
    this.failed = null; // the code the pair failed with
    this.conn = null;
    this.pc = null;
    this.control = null;
    this.pendingCandidates = [];
    this.remoteSet = false;
    this.rebuildTimer = null;
    this.closed = false;
  }

  get state() {
    if (this.failed !== null) return 'failed';
    if (this.control && this.control.readyState === 'open') return 'connected';
    if (this.authenticated) return 'connecting';
    return 'authenticating';
  }

  start() {
    if (this.owner.burnt) {
      this.owner.send(this.id, { kind: 'auth-failed', code: 6012 });
      this.fail(6012, false);
      return;
    }
    this.owner.send(this.id, { kind: 'pake', msg: this.spake.message() });
  }

  close() {
    this.closed = true;
    clearTimeout(this.rebuildTimer);
    this.teardown();
  }

  teardown() {
    if (this.control) this.control.onclose = null;
    if (this.pc) {
      this.pc.onconnectionstatechange = null;
      this.pc.onicecandidate = null;
      this.pc.ondatachannel = null;
      this.pc.close();
    }
    this.pc = null;
    this.control = null;
    this.remoteSet = false;
    this.pendingCandidates = [];
  }

  /** The pair failed for good: close it, tell the other side (unless it told us). */
  fail(code, reply = true) {
    if (this.failed !== null) return;
    this.failed = code;
    this.teardown();
    if (reply) this.owner.send(this.id, { kind: 'auth-failed', code });
    this.owner.linkEvent(this, 'auth-failed', { code });
  }

  /** A `signal` from this member; `data` is an untrusted object. */
  async onSignal(data) {
    if (this.closed || this.failed !== null) return;
    const conn = typeof data.conn === 'string' ? data.conn : null;
    try {
      switch (data.kind) {
        case 'pake':
          return this.onPake(data);
        case 'offer':
          return await this.onOffer(data, conn);
        case 'answer':
          return await this.onAnswer(data, conn);
        case 'candidate':
          return await this.onCandidate(data, conn);
        case 'auth-failed':
          if (!this.authenticated) this.fail(data.code === 6012 ? 6012 : 6011, false);
          return;
        case 'reconnect':
          // The answerer lost the attempt `conn` (or has none): replace ours, if we have it.
          if (this.offerer && this.pc !== null && (conn === null || conn === this.conn)) this.build();
          return;
        default:
          return; // unknown kinds are ignored
      }
    } catch (e) {
      if (e instanceof CodedError && !this.authenticated) this.fail(e.code);
      else this.owner.linkEvent(this, 'warning', { message: String(e && e.message) });
    }
  }

  onPake(data) {
    if (this.theirPake) return; // one PAKE message per pair
    this.theirPake = true;
    if (typeof data.msg !== 'string') throw new CodedError(6011, 'malformed PAKE message');
    this.key = pairKey(this.spake.finish(data.msg));
    if (this.offerer) this.build();
  }

  /** The offerer's new connection attempt: a fresh `conn`, RTCPeerConnection and offer. */
  async build() {
    clearTimeout(this.rebuildTimer);
    this.teardown();
    const conn = newUuid();
    this.conn = conn;
    const pc = this.newPc(conn);
    const control = pc.createDataChannel('control', { ordered: true });
    this.adoptControl(control);
    const offer = await pc.createOffer();
    if (this.pc !== pc) return;
    await pc.setLocalDescription(offer);
    if (this.pc !== pc) return;
    this.owner.send(this.id, {
      kind: 'offer',
      conn,
      sealed: seal(this.key, 'offer', this.owner.clientId, this.id, conn, pc.localDescription.sdp),
    });
  }

  async onOffer(data, conn) {
    if (this.key === null) throw new CodedError(6011, 'an offer before the PAKE message');
    const sdp = open(this.key, 'offer', this.id, this.owner.clientId, conn, data.sealed);
    if (sdp === null) throw new CodedError(6011, 'the offer does not open: the code is wrong');
    this.authenticate();
    // A new offer replaces the current connection.
    this.teardown();
    this.conn = conn;
    const pc = this.newPc(conn);
    await pc.setRemoteDescription({ type: 'offer', sdp });
    this.remoteSet = true;
    await this.flushCandidates(pc);
    const answer = await pc.createAnswer();
    if (this.pc !== pc) return;
    await pc.setLocalDescription(answer);
    if (this.pc !== pc) return;
    const msg = { kind: 'answer', sealed: seal(this.key, 'answer', this.owner.clientId, this.id, conn, pc.localDescription.sdp) };
    if (conn !== null) msg.conn = conn;
    this.owner.send(this.id, msg);
  }

  async onAnswer(data, conn) {
    if (this.key === null) throw new CodedError(6011, 'an answer before the PAKE message');
    if (!this.pc || conn !== this.conn || this.remoteSet) return; // an old attempt's
    const sdp = open(this.key, 'answer', this.id, this.owner.clientId, conn, data.sealed);
    if (sdp === null) throw new CodedError(6011, 'the answer does not open: the code is wrong');
    this.authenticate();
    const pc = this.pc;
    await pc.setRemoteDescription({ type: 'answer', sdp });
    this.remoteSet = true;
    await this.flushCandidates(pc);
  }

  async onCandidate(data, conn) {
    if (this.key === null) throw new CodedError(6011, 'a candidate before the PAKE message');
    const text = open(this.key, 'candidate', this.id, this.owner.clientId, conn, data.sealed);
    if (text === null) {
      // Anyone on the signaling path can inject one: dropped once authenticated.
      if (this.authenticated) return;
      throw new CodedError(6011, 'a candidate that does not open');
    }
    if (conn !== this.conn && !(conn === null && this.conn !== null)) return;
    let init;
    try {
      init = JSON.parse(text);
    } catch {
      return;
    }
    if (!init || typeof init.candidate !== 'string') return;
    this.pendingCandidates.push(init);
    if (this.remoteSet && this.pc) await this.flushCandidates(this.pc);
  }

  async flushCandidates(pc) {
    const list = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const init of list) {
      try {
        await pc.addIceCandidate(init);
      } catch {
        // An `sdpMid` the browser does not know (another stack's naming): the data
        // section is the only m-line, so its index is enough.
        try {
          await pc.addIceCandidate({ candidate: init.candidate, sdpMLineIndex: 0 });
        } catch {
          /* a candidate the browser cannot use */
        }
      }
    }
  }

  authenticate() {
    if (this.authenticated) return;
    this.authenticated = true;
    this.owner.linkEvent(this, 'authenticated', {});
  }

  newPc(conn) {
    const pc = new RTCPeerConnection({ iceServers: this.owner.iceServers });
    this.pc = pc;
    pc.onicecandidate = (ev) => {
      if (!ev.candidate || !ev.candidate.candidate || this.pc !== pc) return;
      const msg = {
        kind: 'candidate',
        sealed: seal(this.key, 'candidate', this.owner.clientId, this.id, conn, JSON.stringify(ev.candidate.toJSON())),
      };
      if (conn !== null) msg.conn = conn;
      this.owner.send(this.id, msg);
    };
    pc.ondatachannel = (ev) => {
      if (this.pc !== pc) return;
      if (ev.channel.label === 'control') this.adoptControl(ev.channel);
      else this.owner.linkEvent(this, 'channel', { channel: ev.channel });
    };
    pc.onconnectionstatechange = () => {
      if (this.pc !== pc) return;
      const s = pc.connectionState;
      this.owner.linkEvent(this, 'state', {});
      if (s === 'failed' || s === 'closed') this.lost();
      else if (s === 'disconnected') {
        clearTimeout(this.rebuildTimer);
        this.rebuildTimer = setTimeout(() => this.pc === pc && pc.connectionState !== 'connected' && this.lost(), REBUILD_AFTER_MS);
      }
    };
    return pc;
  }

  /** Signaling is back under the same client ID: a setup that was under way lost its
   * signals and starts over now (see `setupRestart`). */
  restartSetup() {
    const action = setupRestart({
      keyed: this.key !== null,
      connected: this.state === 'connected',
      done: this.closed || this.failed !== null,
      attempt: this.pc !== null,
      offerer: this.offerer,
    });
    if (action === 'lost') this.lost();
    else if (action === 'build') this.build();
    else if (action === 'ask') this.owner.send(this.id, { kind: 'reconnect' });
  }

  /** The connection is gone: the offerer builds a new one, the answerer asks for it. */
  lost() {
    if (this.closed || this.failed !== null) return;
    const conn = this.conn;
    this.teardown();
    this.owner.linkEvent(this, 'lost', {});
    if (this.offerer) this.rebuildTimer = setTimeout(() => this.build(), 500);
    else {
      const msg = { kind: 'reconnect' };
      if (conn !== null) msg.conn = conn;
      this.owner.send(this.id, msg);
    }
  }

  adoptControl(channel) {
    this.control = channel;
    channel.onopen = () => this.owner.linkEvent(this, 'control-open', {});
    channel.onmessage = (ev) => this.owner.linkEvent(this, 'control', { data: ev.data });
    channel.onclose = () => {
      if (this.control === channel) this.lost();
    };
    if (channel.readyState === 'open') this.owner.linkEvent(this, 'control-open', {});
  }

  /** Send one control message (an object); false if the channel is not open. */
  sendControl(msg) {
    if (!this.control || this.control.readyState !== 'open') return false;
    this.control.send(JSON.stringify(msg));
    return true;
  }

  /** A new data channel to this member, for a job we serve. */
  openChannel(label) {
    if (!this.pc || this.state !== 'connected') return null;
    return this.pc.createDataChannel(label, { ordered: true });
  }
}
