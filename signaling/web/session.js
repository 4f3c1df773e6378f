// The page's peer: it joins a session on the signaling server, keeps a Link per member,
// and runs the file protocol of docs/PROTOCOL.md over their control channels: offers it
// receives become Downloads, files the person shares become Uploads. Everything a person
// sees is reported as events with the names and codes of the native peers.
import { CodedError, parseCode, generateSecret } from './crypto.js';
import { Link } from './link.js';
import { decodeControl, encode, newUuid, truncateBytes, PROTOCOL_VERSION, FEATURES, MAX_LABEL_BYTES } from './wire.js';
import { Download } from './download.js';
import { Upload, Slots, MAX_STREAMS_PER_PEER, MAX_HASHING, onlySends } from './upload.js';
import { RETRY_WINDOW_MS, hintOf, passesOn, rejoinDelay } from './rejoin.js';

const PING_MS = 25000;

/** Failed pairs after which the code is burnt (docs/PROTOCOL.md "Guessing limit"). */
const MAX_AUTH_FAILURES = 3;
/** Offers the page keeps from all members (a stranger cannot make it hold more). */
const MAX_OFFERS = 10000;

export class Session extends EventTarget {
  /**
   * @param server  the signaling server's ws:// or wss:// URL
   * @param name    our display name
   * @param code    `ROUTE-SECRET` to join, or null to create a session with a new code
   */
  constructor(server, name, code) {
    super();
    this.server = server;
    this.name = name;
    this.code = null;
    this.route = null;
    this.secret = null;
    if (code !== null) {
      const c = parseCode(code);
      this.route = c.route;
      this.secret = c.secret;
      this.code = `${c.route}-${c.secret}`;
    }
    this.state = 'connecting';
    this.error = null;
    this.clientId = null;
    this.iceServers = [];
    this.links = new Map();
    this.downloads = new Map(); // file_id → Download
    this.uploads = new Map(); // file_id → Upload
    // Per recipient, of all uploads: streams sending at once, block-hash requests hashed.
    this.streams = new Slots(MAX_STREAMS_PER_PEER);
    this.hashing = new Slots(MAX_HASHING);
    this.events = [];
    this.authFailures = 0;
    this.burnt = false;
    this.ws = null;
    this.pinger = null;
    this.resumeToken = null;
    // Rejoining: when the connection was lost, attempts made, the server's hint (ms).
    this.lostAt = 0;
    this.attempts = 0;
    this.retryHint = null;
    this.rejoinTimer = null;
    this.closed = false;
  }

  // ------------------------------------------------------------------ events out

  /** Record and announce an event; `at` is milliseconds since the page loaded. */
  emit(type, detail = {}) {
    const ev = { event: type, ...detail, at: Math.round(performance.now()) };
    this.events.push(ev);
    this.dispatchEvent(new CustomEvent('event', { detail: ev }));
    this.changed();
  }

  changed() {
    this.dispatchEvent(new Event('change'));
  }

  fatal(code, message) {
    this.state = 'error';
    this.error = { code, message };
    this.emit('error', { code, message });
    this.close();
  }

  // ------------------------------------------------------------------ signaling

  start() {
    this.connect(null);
  }

  /** Open a signaling connection and join (`resume`: `{id, token}` to rejoin as). */
  connect(resume) {
    let ws;
    try {
      ws = new WebSocket(this.server);
    } catch (e) {
      if (resume) return this.rejoinLater();
      this.fatal(6007, `cannot reach the signaling server: ${e.message}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      const join = { type: 'join', version: 2, session: this.route, name: this.name, password: null };
      if (resume) join.resume = resume;
      ws.send(encode(join));
      this.pinger = setInterval(() => ws.readyState === 1 && ws.send('{"type":"ping"}'), PING_MS);
    };
    ws.onmessage = (ev) => this.ws === ws && this.onFrame(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      clearInterval(this.pinger);
      this.onClosed();
    };
  }

  /** The signaling connection closed: rejoin, go on rejoining, or fail the first join. */
  onClosed() {
    if (this.closed) return;
    if (this.state === 'joined') {
      this.state = 'disconnected';
      this.lostAt = performance.now();
      this.attempts = 0;
      this.emit('signaling-lost', { reason: 'the signaling connection closed; connected peers keep working' });
      this.rejoinLater();
    } else if (this.state === 'disconnected') {
      this.rejoinLater();
    } else if (this.state === 'connecting') {
      this.fatal(6007, 'cannot reach the signaling server');
    }
  }

  /** The next attempt to rejoin (see rejoin.js); none once the retry window has passed. */
  rejoinLater() {
    if (this.closed) return;
    const delay = rejoinDelay(this.attempts++, this.retryHint, Math.random());
    this.retryHint = null;
    if (performance.now() + delay - this.lostAt > RETRY_WINDOW_MS) {
      return this.giveUp('no signaling server took us back within 30 s');
    }
    clearTimeout(this.rejoinTimer);
    this.rejoinTimer = setTimeout(() => this.connect({ id: this.clientId, token: this.resumeToken }), delay);
  }

  /** Rejoining is over: members already connected keep working, nobody new can come. */
  giveUp(why) {
    this.state = 'offline';
    this.emit('error', { code: 1180, message: `signaling lost: ${why}` });
  }

  close() {
    this.closed = true;
    clearTimeout(this.rejoinTimer);
    clearInterval(this.pinger);
    for (const link of this.links.values()) link.close();
    if (this.ws && this.ws.readyState <= 1) {
      try {
        this.ws.send('{"type":"leave"}');
      } catch {
        /* closing anyway */
      }
      this.ws.close();
    }
  }

  send(to, data) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(encode({ type: 'signal', to, data }));
  }

  onFrame(text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    if (!f || typeof f !== 'object' || typeof f.type !== 'string') return;
    switch (f.type) {
      case 'welcome':
        return this.onWelcome(f);
      case 'peer-joined':
        if (f.peer && typeof f.peer.id === 'string') this.addMember(f.peer);
        return;
      case 'peer-left':
        return this.removeMember(f.id);
      case 'signal': {
        const link = this.links.get(f.from);
        if (link && f.data && typeof f.data === 'object') {
          link.queue = (link.queue ?? Promise.resolve()).then(() => link.onSignal(f.data));
        }
        return;
      }
      case 'ice-servers':
        if (Array.isArray(f.ice_servers)) this.iceServers = f.ice_servers;
        return;
      case 'error':
        return this.onError(f);
      default:
        return; // pong and unknown frames
    }
  }

  onError(f) {
    const code = Number(f.code) || 7001;
    if (this.state === 'connecting') {
      const why = { 7006: 'no session with this code exists (it may have ended)', 7005: 'the session is full' };
      this.fatal(code, why[code] ?? String(f.message ?? 'refused'));
    } else if (code === 7016) {
      // Another connection took this membership over: stop.
      this.closed = true;
      this.giveUp('another connection resumed this membership (7016)');
    } else if (code === 7012) {
      // Draining: close 1012 follows; come back after its hint.
      this.retryHint = hintOf(f);
    } else if (this.state === 'disconnected') {
      // A refused rejoin: 7017 passes it on, anything else ends it.
      if (passesOn(code)) {
        this.retryHint = hintOf(f);
        this.ws?.close();
      } else {
        const ws = this.ws;
        this.ws = null;
        ws?.close();
        this.giveUp(`the server refused to take us back (${code})`);
      }
    }
  }

  onWelcome(f) {
    const rejoined = this.state === 'disconnected';
    const before = this.clientId;
    this.resumeToken = typeof f.resume_token === 'string' ? f.resume_token : null;
    this.clientId = String(f.client_id);
    this.iceServers = Array.isArray(f.ice_servers) ? f.ice_servers : [];
    const peers = (Array.isArray(f.peers) ? f.peers : []).filter((p) => p && typeof p.id === 'string');
    if (rejoined) {
      this.state = 'joined';
      const resumed = this.clientId === before;
      const listed = new Set(peers.map((p) => p.id));
      // Under a new ID every member is met anew; under ours, those gone left.
      for (const id of [...this.links.keys()]) if (!resumed || !listed.has(id)) this.removeMember(id);
      // The members kept: a setup under way lost its signals (those met below start afresh).
      for (const link of this.links.values()) link.restartSetup();
      for (const p of peers) this.addMember(p);
      this.emit('signaling-reconnected', { client_id: this.clientId, server: this.server, resumed });
      return;
    }
    if (this.route === null) {
      this.route = String(f.session);
      this.secret = generateSecret();
      this.code = `${this.route}-${this.secret}`;
    }
    this.state = 'joined';
    this.emit('joined', { client_id: this.clientId, name: this.name, code: this.code });
    for (const p of peers) this.addMember(p);
  }

  addMember(peer) {
    if (typeof peer.id !== 'string' || this.links.has(peer.id) || peer.id === this.clientId) return;
    const link = new Link(this, { id: peer.id, name: String(peer.name ?? '') });
    this.links.set(peer.id, link);
    link.start();
    this.changed();
  }

  removeMember(id) {
    const link = this.links.get(id);
    if (!link) return;
    link.close();
    this.links.delete(id);
    for (const d of this.downloads.values()) d.peerGone(id);
    for (const u of this.uploads.values()) u.peerGone(id);
    if (link.authenticated) this.emit('peer-left', { id, name: link.name });
    this.changed();
  }

  // ------------------------------------------------------------------ links

  linkEvent(link, type, detail) {
    switch (type) {
      case 'authenticated':
        this.emit('peer-joined', { id: link.id, name: link.name });
        return;
      case 'auth-failed':
        this.authFailures++;
        this.emit('peer-auth-failed', {
          id: link.id,
          name: link.name,
          code: detail.code,
          message: detail.code === 6012 ? 'the code is burnt' : 'authentication failed: the code is wrong, or the server tampered with the connection',
        });
        if (!this.burnt && this.authFailures >= MAX_AUTH_FAILURES) {
          this.burnt = true;
          this.emit('code-burnt', { code: 6012 });
        }
        return;
      case 'control-open':
        link.sendControl({ type: 'hello', version: PROTOCOL_VERSION, name: this.name, features: FEATURES });
        for (const u of this.uploads.values()) u.offerTo(link);
        for (const d of this.downloads.values()) d.linkBack(link);
        this.changed();
        return;
      case 'control':
        return this.onControl(link, detail.data);
      case 'channel':
        return this.onChannel(link, detail.channel);
      case 'lost':
        for (const u of this.uploads.values()) u.linkLost(link);
        this.changed();
        return;
      default:
        this.changed();
    }
  }

  onControl(link, data) {
    let m;
    try {
      m = decodeControl(data);
    } catch (e) {
      const code = e instanceof CodedError ? e.code : 6005;
      link.sendControl({ type: 'error', code, message: String(e.message).slice(0, 512) });
      return;
    }
    switch (m.type) {
      case 'hello':
        link.hello = m;
        if (onlySends(link)) for (const u of this.uploads.values()) u.notARecipient(link);
        if (m.version !== PROTOCOL_VERSION) {
          link.sendControl({ type: 'error', code: 6006, message: `unsupported control protocol version ${m.version}` });
        }
        return this.changed();
      case 'offer':
        return this.onOffer(link, m);
      case 'revoke': {
        const d = this.downloads.get(m.file_id);
        if (d && d.from === link.id) d.revoked();
        return;
      }
      case 'progress':
      case 'done':
      case 'cancel':
      case 'error':
      case 'request':
      case 'decline':
      case 'hashes-request':
        return this.route_(link, m);
      default:
        return; // dirs, hashes: not asked for
    }
  }

  /** A message about a job or a file goes to the Upload or Download it names. */
  route_(link, m) {
    if (m.type === 'request' || m.type === 'decline' || m.type === 'hashes-request') {
      const u = this.uploads.get(m.file_id);
      if (u) return u.onMessage(link, m);
      if (m.type !== 'decline') link.sendControl({ type: 'error', job_id: m.job_id, file_id: m.file_id, code: 1181, message: 'no such file is shared' });
      return;
    }
    if (m.type === 'error' && m.job_id === undefined && m.file_id !== undefined) {
      const u = this.uploads.get(m.file_id);
      if (u) u.onMessage(link, m);
      return;
    }
    for (const u of this.uploads.values()) if (u.hasJob(link.id, m.job_id)) return u.onMessage(link, m);
    for (const d of this.downloads.values()) if (d.from === link.id && d.jobId === m.job_id) return d.onMessage(m);
  }

  onOffer(link, m) {
    if (this.downloads.has(m.file_id)) return;
    if (this.downloads.size >= MAX_OFFERS) {
      link.sendControl({ type: 'error', file_id: m.file_id, code: 5092, message: 'too many offers' });
      return;
    }
    const d = new Download(this, link, m);
    this.downloads.set(m.file_id, d);
    this.emit('file-upload-started', { file_id: m.file_id, name: m.name, size: m.size, sender: link.id });
    this.emit('download-available', d.describe());
  }

  onChannel(link, channel) {
    for (const d of this.downloads.values()) {
      if (d.from === link.id && d.takesChannel(channel.label)) return d.attach(channel);
    }
    channel.close(); // nothing of ours: refused
  }

  // ------------------------------------------------------------------ what the UI calls

  /** The members a share can go to (authenticated, control channel open or coming). */
  members() {
    return [...this.links.values()];
  }

  /** Share `files` (File objects) with every member, or with the client IDs `to`. */
  share(files, to = null) {
    const bytes = files.reduce((n, f) => n + f.size, 0);
    const label = files.length === 1 ? files[0].name : `${files.length} files`;
    const group = { id: newUuid(), count: files.length, label: truncateBytes(label, MAX_LABEL_BYTES), bytes };
    let index = 0;
    for (const file of files) {
      const u = new Upload(this, file, to ? new Set(to) : null, { ...group, index: index++ });
      this.uploads.set(u.fileId, u);
      u.start();
    }
    this.changed();
  }
}
