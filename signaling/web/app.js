// The page's user interface: what a person sees of the Session and what they can do. Every
// text from a peer or the server is set with textContent (never parsed as HTML).
import { Session } from './session.js';
import { humanSize, shown, saveName } from './wire.js';
import { streamsToDisk, sweep, BLOB_CAP } from './store.js';

const $ = (id) => document.getElementById(id);

/** `el('li', {class: 'x', dataset: {id: 1}}, 'text', child)` */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const serverUrl = () => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;

function cliTicket(code) {
  return location.protocol === 'https:' ? `${code}@wss://${location.host}` : `${code}@${location.host}`;
}

const pageUrl = (code) => `${location.origin}${location.pathname}#${code}`;

function codeFromUrl() {
  const code = decodeURIComponent(location.hash.slice(1)).trim();
  return code === '' ? null : code;
}

/** The name others see: the one the person chose last time, else the browser and its
 * platform ("Chromium on Linux"). */
function defaultName() {
  const saved = localStorage.getItem('peershare.name');
  if (saved && saved.trim()) return saved.trim();
  const ua = navigator.userAgentData;
  // Brands hold a made-up "GREASE" entry ("Not:A-Brand") and, in Chrome, Edge and
  // others, "Chromium" next to the product's own name.
  const brands = (ua?.brands ?? []).map((b) => b.brand).filter((b) => !/^not.?a.?brand$/i.test(b));
  const brand = brands.find((b) => b !== 'Chromium') ?? brands[0];
  return brand && ua.platform ? `${brand} on ${ua.platform}` : 'browser';
}

const STATES = {
  available: 'offered',
  requested: 'waiting for the sender',
  receiving: 'receiving',
  verifying: 'verifying',
  completed: 'verified',
  declined: 'declined',
  cancelled: 'cancelled',
  failed: 'failed',
  withdrawn: 'withdrawn',
  offered: 'offered',
  sending: 'sending',
  delivered: 'delivered',
  hashing: 'hashing',
  shared: 'shared',
  stopped: 'stopped',
};

let session = null;

function showError(code, message) {
  const box = $('error');
  box.hidden = false;
  box.dataset.code = String(code);
  box.replaceChildren(el('strong', {}, `Error ${code}: `), shown(message));
}

function setStatus(state, text) {
  const s = $('status');
  s.dataset.state = state;
  s.textContent = text;
}

function start(code) {
  const name = ($('name-input').value || defaultName()).trim().slice(0, 64) || 'browser';
  try {
    session = new Session(serverUrl(), name, code);
  } catch (e) {
    showError(e.code ?? 6008, e.message);
    $('start').hidden = false;
    return;
  }
  window.peershare = session; // for the browser's console and automated tests
  $('start').hidden = true;
  setStatus('connecting', 'Connecting…');
  session.addEventListener('event', (ev) => onEvent(ev.detail));
  let scheduled = false;
  session.addEventListener('change', () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      render();
    });
  });
  session.start();
}

function onEvent(ev) {
  const item = el('li', { dataset: { event: ev.event } }, ev.event);
  if (ev.code !== undefined) item.dataset.code = String(ev.code);
  if (ev.name !== undefined) item.append(' ', el('span', { class: 'muted' }, shown(ev.name)));
  if (ev.code !== undefined) item.append(' ', el('span', { class: 'code' }, String(ev.code)));
  $('events').append(item);
  if (ev.event === 'joined') {
    if (location.hash.slice(1) !== ev.code) history.replaceState(null, '', pageUrl(ev.code));
  }
  if (ev.event === 'error') showError(ev.code, ev.message);
  if (ev.event === 'peer-auth-failed' && session.links.size > 0) {
    const anyOk = [...session.links.values()].some((l) => l.authenticated);
    if (!anyOk) showError(ev.code, ev.code === 6012 ? 'This code is burnt after too many failed attempts. Ask for a new one.' : 'Authentication failed: the code is wrong (or someone tampered with the connection). Check the code and try again.');
  }
}

function render() {
  if (!session) return;
  const joined = ['joined', 'disconnected', 'offline'].includes(session.state);
  if (session.state === 'error') setStatus('error', 'Not connected');
  else if (session.state === 'disconnected') setStatus('disconnected', 'Signaling lost; rejoining (connected members keep working)');
  else if (session.state === 'offline') setStatus('disconnected', 'Signaling lost; connected members keep working, nobody new can join');
  else if (joined) setStatus('joined', `In session ${session.route}`);
  $('session').hidden = !joined;
  $('send').hidden = !joined;
  $('receive').hidden = !joined;
  if (!joined) return;
  $('code').textContent = session.code;
  $('cli-ticket').textContent = `peershare recv ${cliTicket(session.code)}`;
  const link = $('page-link');
  link.href = pageUrl(session.code);
  link.textContent = pageUrl(session.code);
  $('me').textContent = `${shown(session.name)} (client ID ${session.clientId})`;
  renderMembers();
  renderUploads();
  renderDownloads();
}

function renderMembers() {
  const links = session.members();
  $('no-members').hidden = links.length > 0;
  sync($('members'), links, (l) => l.id, (l, li) => {
    li.dataset.id = l.id;
    li.dataset.state = l.state;
    const label = { connected: 'connected', connecting: 'connecting', authenticating: 'checking the code', failed: `refused (${l.failed})` }[l.state];
    li.replaceChildren(el('span', { class: 'name' }, shown(l.name)), ' ', el('span', { class: `badge ${l.state}` }, label), ' ', el('span', { class: 'muted' }, l.id));
  });
  const box = $('audience-members');
  const chosen = new Set([...box.querySelectorAll('input:checked')].map((i) => i.value));
  sync(box, links.filter((l) => l.authenticated), (l) => l.id, (l, lab) => {
    if (!lab.firstChild) lab.append(el('input', { type: 'checkbox', value: l.id }), ' ', el('span'));
    lab.firstChild.checked = chosen.has(l.id);
    lab.lastChild.textContent = shown(l.name);
  }, 'label');
}

/** Keep `parent`'s children one per item, keyed, updated in place by `update`. */
function sync(parent, items, key, update, tag = 'li') {
  const have = new Map([...parent.children].map((c) => [c.dataset.key, c]));
  const want = new Set();
  let prev = null;
  for (const item of items) {
    const k = String(key(item));
    want.add(k);
    let node = have.get(k);
    if (!node) {
      node = el(tag, { dataset: { key: k } });
    }
    update(item, node);
    const next = prev ? prev.nextSibling : parent.firstChild;
    if (next !== node) parent.insertBefore(node, next);
    prev = node;
  }
  for (const [k, node] of have) if (!want.has(k)) node.remove();
}

function progress(value, max, label) {
  return el('progress', { value: String(value), max: String(Math.max(max, 1)), 'aria-label': label });
}

function renderUploads() {
  sync($('uploads'), [...session.uploads.values()], (u) => u.fileId, (u, li) => {
    li.dataset.fileId = u.fileId;
    li.dataset.state = u.state;
    const sig = [u.state, ...[...u.outcomes].map(([id, o]) => `${id}:${o.state}:${o.code}`)].join('|');
    if (li.dataset.sig === sig) {
      // Only the figures moved: update the bars in place (buttons stay clickable).
      const bars = li.querySelectorAll('progress');
      if (u.state === 'hashing' && bars[0]) bars[0].value = u.hashed;
      for (const row of li.querySelectorAll('.outcome')) {
        const bar = row.querySelector('progress');
        if (bar) bar.value = u.outcomes.get(row.dataset.peer)?.sent ?? 0;
      }
      return;
    }
    li.dataset.sig = sig;
    const head = el('div', { class: 'head' }, el('span', { class: 'name' }, shown(u.name)), ' ', el('span', { class: 'muted' }, humanSize(u.size)), ' ', el('span', { class: `badge ${u.state}` }, STATES[u.state]));
    if (u.state === 'shared' || u.state === 'hashing') head.append(' ', el('button', { type: 'button', class: 'small stop', onclick: () => u.stop() }, 'Stop sharing'));
    const rows = [head];
    if (u.state === 'hashing') rows.push(progress(u.hashed, u.size, `hashing ${u.name}`));
    const outs = el('ul', { class: 'outcomes' });
    for (const [id, o] of u.outcomes) {
      const row = el('li', { class: 'outcome', dataset: { peer: id, state: o.state } }, shown(o.name), ' ', el('span', { class: `badge ${o.state}` }, STATES[o.state] + (o.code ? ` (${o.code})` : '')));
      if (o.code) row.dataset.code = String(o.code);
      if (o.state === 'sending') row.append(' ', progress(o.sent, u.size, `sending ${u.name} to ${o.name}`));
      outs.append(row);
    }
    rows.push(outs);
    li.replaceChildren(...rows);
  });
}

function renderDownloads() {
  const all = [...session.downloads.values()];
  $('no-downloads').hidden = all.length > 0;
  const open = all.filter((d) => d.state === 'available');
  $('accept-all').hidden = open.length < 2;
  sync($('downloads'), all, (d) => d.fileId, (d, li) => {
    li.dataset.fileId = d.fileId;
    li.dataset.state = d.state;
    if (d.code) li.dataset.code = String(d.code);
    const o = d.offer;
    const sig = `${d.state}|${d.code}|${d.url}`;
    if (li.dataset.sig === sig) {
      const bar = li.querySelector('progress');
      if (bar) bar.value = d.received;
      const text = li.querySelector('.figures');
      if (text) text.textContent = `${humanSize(d.received)} of ${humanSize(d.size)}`;
      return;
    }
    li.dataset.sig = sig;
    const head = el('div', { class: 'head' }, el('span', { class: 'name' }, shown(o.path ?? o.name)), ' ', el('span', { class: 'muted' }, `${humanSize(o.size)} from ${shown(d.fromName)}`), ' ', el('span', { class: `badge ${d.state}` }, STATES[d.state] + (d.code ? ` (${d.code})` : '')));
    const rows = [head];
    if (d.state === 'available') {
      rows.push(el('div', { class: 'actions' }, el('button', { type: 'button', class: 'accept primary', onclick: () => d.accept() }, 'Accept'), ' ', el('button', { type: 'button', class: 'decline', onclick: () => d.decline() }, 'Decline')));
    } else if (d.state === 'requested' || d.state === 'receiving') {
      rows.push(el('div', { class: 'actions' }, progress(d.received, d.size, `receiving ${o.name}`), ' ', el('span', { class: 'muted figures' }, `${humanSize(d.received)} of ${humanSize(d.size)}`), ' ', el('button', { type: 'button', class: 'small cancel', onclick: () => d.cancel() }, 'Cancel')));
    } else if (d.state === 'completed') {
      rows.push(el('div', { class: 'actions' }, el('a', { class: 'save button primary', href: d.url, download: saveName(o.name) }, 'Save'), ' ', el('span', { class: 'muted' }, 'BLAKE3 verified')));
    } else if (d.message) {
      rows.push(el('p', { class: 'why' }, shown(d.message)));
    }
    li.replaceChildren(...rows);
  });
}

function chosenAudience() {
  const mode = document.querySelector('input[name="to"]:checked')?.value;
  if (mode !== 'some') return null;
  return [...$('audience-members').querySelectorAll('input:checked')].map((i) => i.value);
}

function share(files) {
  if (!session || files.length === 0) return;
  const to = chosenAudience();
  if (to !== null && to.length === 0) {
    showError(6008, 'Choose at least one member, or send to everyone.');
    return;
  }
  $('error').hidden = true;
  session.share([...files], to);
}

function wire() {
  $('name-input').value = defaultName();
  $('name-input').addEventListener('change', () => localStorage.setItem('peershare.name', $('name-input').value.trim()));
  $('join-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const code = $('code-input').value.trim();
    location.hash = code;
  });
  $('create-button').addEventListener('click', () => start(null));
  $('file-input').addEventListener('change', (ev) => {
    share(ev.target.files);
    ev.target.value = '';
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (ev) => {
    ev.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    share(ev.dataTransfer.files);
  });
  $('accept-all').addEventListener('click', () => {
    for (const d of session.downloads.values()) d.accept();
  });
  for (const b of document.querySelectorAll('[data-copy]')) {
    b.addEventListener('click', () => navigator.clipboard?.writeText($(b.dataset.copy).textContent));
  }
  $('storage-note').textContent = streamsToDisk()
    ? 'Files stream to this browser\u2019s storage as they arrive and are checked before you save them.'
    : `This browser keeps downloads in memory until you save them: files up to ${humanSize(BLOB_CAP)}.`;
  window.addEventListener('hashchange', () => location.reload());
  window.addEventListener('beforeunload', () => session?.close());
  sweep().catch(() => {});
  const code = codeFromUrl();
  if (code === null) {
    setStatus('idle', 'Not connected');
    $('start').hidden = false;
  } else start(code);
}

wire();
