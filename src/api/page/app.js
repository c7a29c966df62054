// recvault's page for QA analysts: a client of /v1 with the session cookie.
// Plain JavaScript, no build step, nothing from outside this server.
'use strict';

const state = { me: null, timers: [] };
const main = document.getElementById('main');

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function show(...nodes) {
  if (state.player) state.player.stopped = true;
  state.player = null;
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  for (const v of main.querySelectorAll('video')) { v.pause(); v.removeAttribute('src'); v.load(); }
  main.replaceChildren(...nodes);
  main.focus();
}

function status(text) { document.getElementById('status').textContent = text || ''; }

function bytes(n) {
  if (n === null || n === undefined) return '';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0; let x = n;
  while (x >= 1000 && i < u.length - 1) { x /= 1000; i++; }
  return (i === 0 ? String(x) : x.toFixed(1)) + ' ' + u[i];
}

function clock(secs) {
  if (!isFinite(secs) || secs < 0) secs = 0;
  const s = Math.floor(secs);
  const h = Math.floor(s / 3600); const m = Math.floor(s / 60) % 60; const r = s % 60;
  const two = n => String(n).padStart(2, '0');
  return (h ? h + ':' + two(m) : String(m)) + ':' + two(r);
}

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/Z$/, ' UTC');
}

function text(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') {
    return Object.entries(v).map(([k, x]) => k + ': ' + (typeof x === 'object' ? JSON.stringify(x) : x)).join(', ');
  }
  return String(v);
}

function ymd(d) { return d.toISOString().slice(0, 10); }

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// A call of /v1 (or /session) with the session cookie; state-changing
// requests carry the CSRF token. A 401 goes back to the login form.
async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const method = opts.method || 'GET';
  if (method !== 'GET' && method !== 'HEAD' && state.me) headers['X-CSRF-Token'] = state.me.csrf;
  if (opts.json !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: opts.json !== undefined ? JSON.stringify(opts.json) : undefined,
  });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const msg = (body && body.error) || ('the server answered ' + r.status);
    if (r.status === 401 && path !== '/session') { state.me = null; login(msg); }
    throw new HttpError(r.status, msg);
  }
  return body;
}

function failed(e) {
  return el('p', { class: 'error', role: 'alert', text: e.message || String(e) });
}

// ---------------------------------------------------------------- login

function login(message) {
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('who').textContent = '';
  const err = el('p', { class: 'error', role: 'alert', id: 'login-error', text: message || '' });
  const user = el('input', { name: 'user', id: 'user', autocomplete: 'username', required: true });
  const pass = el('input', { name: 'password', id: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = el('form', { class: 'login', onsubmit: async ev => {
    ev.preventDefault();
    err.textContent = '';
    try {
      state.me = await api('/session', { method: 'POST', json: { user: user.value, password: pass.value } });
      pass.value = '';
      loggedIn();
    } catch (e) {
      err.textContent = e.message;
      pass.select();
    }
  } },
  el('h1', { text: 'Log in' }),
  el('label', {}, 'User', user),
  el('label', {}, 'Password', pass),
  el('button', { type: 'submit', id: 'login-submit', text: 'Log in' }),
  err);
  show(form);
  user.focus();
}

function loggedIn() {
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  document.getElementById('who').textContent = state.me.user + ' (' + state.me.tenant + ')';
  route();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('/session', { method: 'DELETE' }); } catch (e) { /* ended already */ }
  state.me = null;
  location.hash = '#/';
  login('Logged out.');
});

// ---------------------------------------------------------------- calendar and lists

function calendar(month, selected) {
  const [y, m] = month.split('-').map(Number);
  const first = new Date(Date.UTC(y, m - 1, 1));
  const days = new Date(Date.UTC(y, m, 0)).getUTCDate();
  const grid = el('div', { class: 'calendar', role: 'grid', 'aria-label': 'days of ' + month });
  for (const d of ['Mo', 'Tu', 'We', 'Th', 'Fr', 'Sa', 'Su']) grid.append(el('div', { class: 'dow', text: d }));
  const lead = (first.getUTCDay() + 6) % 7;
  for (let i = 0; i < lead; i++) grid.append(el('div'));
  for (let d = 1; d <= days; d++) {
    const day = month + '-' + String(d).padStart(2, '0');
    grid.append(el('button', {
      type: 'button', class: day === selected ? 'selected' : null, 'data-day': day,
      'aria-pressed': day === selected ? 'true' : 'false',
      onclick: () => { location.hash = '#/day/' + day; },
    }, String(d)));
  }
  const shift = n => {
    const t = new Date(Date.UTC(y, m - 1 + n, 1));
    return t.toISOString().slice(0, 7);
  };
  return el('div', {},
    el('div', { class: 'monthbar' },
      el('button', { type: 'button', id: 'month-prev', 'aria-label': 'previous month', onclick: () => { location.hash = '#/month/' + shift(-1); } }, '‹'),
      el('strong', { text: first.toLocaleString('en', { month: 'long', year: 'numeric', timeZone: 'UTC' }) }),
      el('button', { type: 'button', id: 'month-next', 'aria-label': 'next month', onclick: () => { location.hash = '#/month/' + shift(1); } }, '›')),
    grid);
}

// A table of calls from /v1/calls with `query`, and a button for the next page.
function callList(query) {
  const body = el('tbody');
  const table = el('table', { class: 'calls' },
    el('thead', {}, el('tr', {},
      el('th', { text: 'Started' }), el('th', { text: 'Agent' }), el('th', { text: 'User' }),
      el('th', { text: 'Queue' }), el('th', { class: 'num', text: 'Duration' }), el('th', { text: 'Tags' }))),
    body);
  const more = el('button', { type: 'button', hidden: true, text: 'More calls' });
  const note = el('p', { class: 'muted' });
  const wrap = el('div', {}, table, note, more);
  let cursor = null;
  async function page() {
    more.hidden = true;
    const q = new URLSearchParams(query);
    if (cursor) q.set('cursor', cursor);
    try {
      const r = await api('/v1/calls?' + q.toString());
      for (const c of r.calls) {
        body.append(el('tr', {},
          el('td', {}, el('a', { href: '#/call/' + encodeURIComponent(c.id), text: when(c.started_at) || c.session_id })),
          el('td', { text: text(c.agent) }), el('td', { text: text(c.user) }), el('td', { text: text(c.queue) }),
          el('td', { class: 'num', text: c.duration_secs === null ? '' : clock(c.duration_secs) }),
          el('td', { text: text(c.tags) })));
      }
      cursor = r.next_cursor;
      more.hidden = !cursor;
      note.textContent = body.children.length ? '' : 'No calls.';
    } catch (e) {
      wrap.append(failed(e));
    }
  }
  more.addEventListener('click', page);
  page();
  return wrap;
}

function dayView(day) {
  show(el('h1', { text: 'Calls of ' + day }), calendar(day.slice(0, 7), day),
    callList({ from: day, to: day, order: 'asc', limit: '100' }));
}

function monthView(month) {
  show(el('h1', { text: 'Pick a day' }), calendar(month, null));
}

function searchView(params) {
  const f = name => el('input', { name, id: 'q-' + name, value: params.get(name) || '' });
  const from = el('input', { name: 'from', id: 'q-from', type: 'date', value: params.get('from') || '' });
  const to = el('input', { name: 'to', id: 'q-to', type: 'date', value: params.get('to') || '' });
  const [agent, queue, tag] = [f('agent'), f('queue'), f('tag')];
  const results = el('div');
  const form = el('form', { class: 'search', onsubmit: ev => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const i of [from, to, agent, queue, tag]) if (i.value) q.set(i.name, i.value);
    location.hash = '#/search?' + q.toString();
  } },
  el('label', {}, 'From', from), el('label', {}, 'To', to), el('label', {}, 'Agent', agent),
  el('label', {}, 'Queue', queue), el('label', {}, 'Tag (key:value)', tag),
  el('button', { type: 'submit', text: 'Search' }));
  show(el('h1', { text: 'Search calls' }), form, results);
  if ([...params.keys()].length) results.append(callList(params));
}

// ---------------------------------------------------------------- media

// The codecs of an MP4 from its ftyp/moov bytes, for Media Source.
function mp4Codecs(buf) {
  const find = name => {
    const n = [...name].map(c => c.charCodeAt(0));
    for (let i = 0; i + 4 <= buf.length; i++) {
      if (buf[i] === n[0] && buf[i + 1] === n[1] && buf[i + 2] === n[2] && buf[i + 3] === n[3]) return i;
    }
    return -1;
  };
  const codecs = [];
  const avcc = find('avcC');
  if (avcc >= 0 && avcc + 8 <= buf.length) {
    const hex = b => b.toString(16).padStart(2, '0');
    codecs.push('avc1.' + hex(buf[avcc + 5]) + hex(buf[avcc + 6]) + hex(buf[avcc + 7]));
  }
  if (find('mp4a') >= 0) codecs.push('mp4a.40.2');
  else if (find('Opus') >= 0) codecs.push('opus');
  return codecs.join(', ');
}

// Where the top-level `moov` box of `buf` ends, or -1 while it is incomplete.
function moovEnd(buf) {
  let at = 0;
  while (at + 8 <= buf.length) {
    const size = ((buf[at] << 24) >>> 0) + (buf[at + 1] << 16) + (buf[at + 2] << 8) + buf[at + 3];
    const type = String.fromCharCode(buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]);
    if (size < 8) return -1;
    if (type === 'moov') return at + size <= buf.length ? at + size : -1;
    at += size;
  }
  return -1;
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

// Where the first `moof` box (a fragment) starts in `buf`, or -1: a box
// header `moof` whose first child is `mfhd`.
function moofAt(buf) {
  for (let i = 0; i + 16 <= buf.length; i++) {
    if (buf[i + 4] === 0x6d && buf[i + 5] === 0x6f && buf[i + 6] === 0x6f && buf[i + 7] === 0x66 &&
        buf[i + 12] === 0x6d && buf[i + 13] === 0x66 && buf[i + 14] === 0x68 && buf[i + 15] === 0x64) return i;
  }
  return -1;
}

function joined(a, b) {
  const j = new Uint8Array(a.length + b.length);
  j.set(a); j.set(b, a.length);
  return j;
}

// Plays a fragmented MP4 through Media Source: one streaming GET from the
// start, each chunk appended as it arrives, so a call whose MP4 is still
// rendering plays at once (a <video src> would first walk every fragment
// of the file, i.e. wait for the render). It keeps at most AHEAD seconds
// buffered. A seek outside what is buffered (or about to be) is a Range
// request from the byte where that time should be (the file's size spread
// evenly over the call), resynchronised on the next fragment, and moved
// earlier when it landed after the time sought.
const AHEAD = 30;
function mseMp4(video, url, duration, size) {
  const ms = new MediaSource();
  video.src = URL.createObjectURL(ms);
  const player = { stopped: false, received: 0, jumps: 0, gen: 0 };
  let sb = null;
  let initEnd = 0;
  const idle = () => sb && sb.updating ? new Promise(r => sb.addEventListener('updateend', r, { once: true })) : null;
  const live = gen => !player.stopped && gen === player.gen && ms.readyState !== 'closed';
  // Appends one chunk; false when this stream was given up.
  const append = async (chunk, gen) => {
    for (;;) {
      if (!live(gen)) return false;
      await idle();
      if (!live(gen)) return false;
      const b = sb.buffered;
      let end = null;
      for (let i = 0; i < b.length; i++) if (b.start(i) <= video.currentTime + 1 && b.end(i) >= video.currentTime) end = b.end(i);
      if (end !== null && end - video.currentTime > AHEAD) { await sleep(300); continue; }
      try {
        sb.appendBuffer(chunk);
        await idle();
        return true;
      } catch (e) {
        if (e.name !== 'QuotaExceededError') throw e;
        // Full: drop what was played more than 10 s ago, then try again.
        const behind = video.currentTime - 10;
        if (b.length && behind > b.start(0)) { sb.remove(b.start(0), behind); await idle(); } else await sleep(500);
      }
    }
  };
  const covered = t => {
    const b = sb.buffered;
    for (let i = 0; i < b.length; i++) if (t >= b.start(i) && t <= b.end(i)) return true;
    return false;
  };
  const failed = e => {
    player.error = e.message || String(e);
    video.dispatchEvent(new CustomEvent('playerror', { detail: player.error }));
  };
  // Streams the file from byte `from` (0: the start, with its init segment).
  async function pump(from, gen, target, backoff) {
    const headers = from > 0 ? { Range: 'bytes=' + from + '-' } : {};
    const r = await fetch(url, { credentials: 'same-origin', cache: 'no-store', headers });
    if (!r.ok) throw new HttpError(r.status, 'the MP4 could not be read (' + r.status + ')');
    const reader = r.body.getReader();
    let head = new Uint8Array(0);
    let deciding = from > 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!live(gen)) { reader.cancel().catch(() => {}); return; }
      player.received += value.length;
      let chunk = value;
      if (head !== null) {
        head = joined(head, value);
        if (from === 0) {
          const end = moovEnd(head);
          if (end < 0) continue;
          const type = 'video/mp4; codecs="' + mp4Codecs(head.subarray(0, end)) + '"';
          if (!MediaSource.isTypeSupported(type)) throw new Error('this browser cannot play ' + type);
          sb = ms.addSourceBuffer(type);
          if (duration > 0) ms.duration = duration;
          initEnd = end;
        } else {
          const at = moofAt(head);
          if (at < 0) { if (head.length > 16 << 20) throw new Error('no MP4 fragment found after byte ' + from); continue; }
          head = head.subarray(at);
        }
        chunk = head;
        head = null;
      }
      if (!await append(chunk, gen)) { reader.cancel().catch(() => {}); return; }
      if (deciding) {
        // Until the time sought is buffered: a range that starts after it
        // means the jump landed too late, so start earlier.
        if (covered(target)) deciding = false;
        else {
          const b = sb.buffered;
          let late = false;
          for (let i = 0; i < b.length; i++) if (b.start(i) > target) late = true;
          if (late && backoff < 4) {
            reader.cancel().catch(() => {});
            jump(target, backoff + 1);
            return;
          }
          if (late) deciding = false;
        }
      }
    }
    if (live(gen) && ms.readyState === 'open') { await idle(); ms.endOfStream(); }
  }
  async function jump(t, backoff) {
    player.gen += 1;
    player.jumps += 1;
    const gen = player.gen;
    await idle();
    try { sb.abort(); } catch (e) { /* not open */ }
    const perSecond = (size - initEnd) / Math.max(duration, 1);
    const from = Math.max(initEnd, Math.floor(initEnd + perSecond * (t - 4 - 8 * backoff)));
    pump(from, gen, t, backoff).catch(failed);
  }
  video.addEventListener('seeking', () => {
    if (!sb || player.stopped) return;
    const t = video.currentTime;
    const b = sb.buffered;
    // Buffered, or within what the stream in flight brings next.
    for (let i = 0; i < b.length; i++) if (t >= b.start(i) && t <= b.end(i) + 10) return;
    jump(t, 0);
  });
  ms.addEventListener('sourceopen', () => pump(0, 0, 0, 0).catch(failed), { once: true });
  return player;
}

// Two videos on one clock: play, pause, seek and rate act on both; each is
// placed at its offset from the start of the call; drift over 0.3 s is a
// hard seek, smaller drift a playbackRate nudge; a side that stalls holds
// the clock (and so pauses the other).
class Dual {
  constructor(sides, duration) {
    this.sides = sides; // [{ video, offset }]
    this.duration = duration;
    this.t = 0; this.rate = 1; this.playing = false; this.stalled = false;
    this.last = performance.now();
    this.listeners = [];
  }

  wantOf(s) { return this.t - s.offset; }

  length(s) { return isFinite(s.video.duration) ? s.video.duration : this.duration; }

  active(s) { const w = this.wantOf(s); return w >= 0 && w < this.length(s) - 0.05; }

  play() { this.playing = true; this.last = performance.now(); this.tick(); }

  pause() {
    this.playing = false;
    for (const s of this.sides) s.video.pause();
    this.tick();
  }

  seek(t) {
    this.t = Math.max(0, Math.min(t, this.duration));
    for (const s of this.sides) s.video.currentTime = Math.max(0, Math.min(this.wantOf(s), this.length(s)));
    this.last = performance.now();
    this.tick();
  }

  setRate(r) { this.rate = r; this.tick(); }

  tick() {
    const now = performance.now();
    const dt = (now - this.last) / 1000;
    this.last = now;
    // A side that should play but cannot yet holds the clock.
    this.stalled = this.sides.some(s => this.active(s) && (s.video.readyState < 3 || s.video.seeking));
    if (this.playing && !this.stalled) this.t = Math.min(this.t + dt * this.rate, this.duration);
    if (this.t >= this.duration) this.playing = false;
    for (const s of this.sides) {
      const v = s.video;
      if (!this.active(s)) {
        if (!v.paused) v.pause();
        const w = this.wantOf(s);
        const parked = w < 0 ? 0 : this.length(s);
        if (Math.abs(v.currentTime - parked) > 0.3 && !v.seeking) v.currentTime = parked;
        continue;
      }
      const drift = v.currentTime - this.wantOf(s);
      if (Math.abs(drift) > 0.3 && !v.seeking) {
        v.currentTime = this.wantOf(s);
      } else {
        // Ahead: a little slower; behind: a little faster.
        const nudge = Math.max(-0.1, Math.min(0.1, drift));
        v.playbackRate = this.rate * (1 - nudge);
      }
      if (this.playing && !this.stalled && v.paused) v.play().catch(() => {});
      if ((!this.playing || this.stalled) && !v.paused) v.pause();
    }
    for (const f of this.listeners) f();
  }
}

// ---------------------------------------------------------------- call page

// The offset (s) of each party's own file from the start of the call: its
// earliest stream's first frame against the call's earliest.
function partyOffsets(streams) {
  const first = {};
  let origin = null;
  for (const [name, s] of Object.entries(streams || {})) {
    const at = s.first_frame_us || s.created_us;
    if (!at) continue;
    const party = name.split('-')[0];
    first[party] = first[party] === undefined ? at : Math.min(first[party], at);
    origin = origin === null ? at : Math.min(origin, at);
  }
  const out = {};
  for (const [p, at] of Object.entries(first)) out[p] = (at - origin) / 1e6;
  return out;
}

function mediaUrl(id, name, attachment) {
  return '/v1/calls/' + encodeURIComponent(id) + '/media/' + encodeURIComponent(name) + (attachment ? '?disposition=attachment' : '');
}

function mp4Section(call, mp4) {
  const video = el('video', { id: 'mp4-video', controls: true, preload: 'auto', 'aria-label': 'the call, both parties' });
  const note = el('p', { class: 'muted', id: 'mp4-note', text: mp4.rendered ? '' : 'Rendering on first view: it plays as it is made.' });
  const player = mseMp4(video, mediaUrl(call.id, mp4.name), call.duration_secs || 0, mp4.size);
  window.recvaultPlayer = player;
  video.addEventListener('playerror', ev => note.replaceChildren(failed(new Error(ev.detail))));
  state.next.player = player;
  return el('section', { class: 'mp4' }, el('h2', { text: 'Both parties' }), video, note);
}

function dualSection(call, parties) {
  const offsets = partyOffsets(call.streams);
  const sides = parties.map(p => {
    const party = p.name.split('.')[0];
    const video = el('video', { id: 'dual-' + party, preload: 'auto', src: mediaUrl(call.id, p.name), 'aria-label': party });
    return { party, video, offset: offsets[party] || 0 };
  });
  const duration = call.duration_secs || Math.max(...sides.map(s => s.offset)) || 0;
  const dual = new Dual(sides, duration);
  // A party may end after the call's recorded end (a late start): the
  // clock runs to the later of the two.
  for (const s of sides) {
    s.video.addEventListener('loadedmetadata', () => {
      if (isFinite(s.video.duration)) dual.duration = Math.max(dual.duration, s.offset + s.video.duration);
    });
  }
  state.dual = dual;
  window.recvaultDual = dual;
  const playBtn = el('button', { type: 'button', id: 'dual-play', text: 'Play' });
  const pos = el('input', { type: 'range', id: 'dual-seek', min: '0', max: String(duration), step: '0.1', value: '0', 'aria-label': 'position' });
  const time = el('span', { id: 'dual-time', text: clock(0) + ' / ' + clock(duration) });
  const rate = el('select', { id: 'dual-rate', 'aria-label': 'speed' },
    ...[1, 1.5, 2].map(r => el('option', { value: String(r), text: r + '×' })));
  playBtn.addEventListener('click', () => { if (dual.playing) dual.pause(); else dual.play(); });
  pos.addEventListener('input', () => dual.seek(Number(pos.value)));
  rate.addEventListener('change', () => dual.setRate(Number(rate.value)));
  dual.listeners.push(() => {
    playBtn.textContent = dual.playing ? 'Pause' : 'Play';
    pos.max = String(dual.duration);
    if (document.activeElement !== pos) pos.value = String(dual.t);
    time.textContent = clock(dual.t) + ' / ' + clock(dual.duration) + (dual.stalled && dual.playing ? ' (loading)' : '');
  });
  state.next.timers.push(() => dual.tick());
  return el('section', { class: 'dual' },
    el('h2', { text: 'Side by side (dual player)' }),
    el('div', { class: 'screens' }, ...sides.map(s => el('figure', {}, s.video,
      el('figcaption', { text: s.party + (s.offset ? ' (starts at ' + s.offset.toFixed(2) + ' s)' : '') })))),
    el('div', { class: 'controls' }, playBtn, pos, time, el('label', {}, 'Speed ', rate)));
}

function facts(call) {
  const dl = el('dl', { class: 'facts' });
  const add = (k, v) => { if (v !== null && v !== undefined && v !== '') dl.append(el('dt', { text: k }), el('dd', {}, v)); };
  add('Call', call.id);
  add('Started', when(call.started_at));
  add('Ended', when(call.ended_at));
  add('Duration', call.duration_secs === null ? '' : clock(call.duration_secs));
  add('Agent', text(call.agent));
  add('User', text(call.user));
  add('Queue', text(call.queue));
  add('Direction', text(call.direction));
  add('Tags', text(call.tags));
  add('Archived', when(call.ingested_at));
  return dl;
}

function streamTable(streams) {
  const rows = Object.entries(streams || {}).map(([name, s]) => el('tr', {},
    el('td', { text: name }), el('td', { text: s.codec }), el('td', { class: 'num', text: clock((s.duration_ms || 0) / 1000) }),
    el('td', { class: 'num', text: s.packets }), el('td', { class: 'num', text: s.lost }), el('td', { class: 'num', text: s.reordered })));
  return el('table', { class: 'streams' },
    el('thead', {}, el('tr', {}, el('th', { text: 'Stream' }), el('th', { text: 'Codec' }), el('th', { class: 'num', text: 'Length' }),
      el('th', { class: 'num', text: 'Packets' }), el('th', { class: 'num', text: 'Lost' }), el('th', { class: 'num', text: 'Reordered' }))),
    el('tbody', {}, rows));
}

function fileTable(call) {
  const rows = call.media.map(m => el('tr', {},
    el('td', {}, el('a', { href: mediaUrl(call.id, m.name, true), download: m.name, 'data-size': String(m.size), text: m.name })),
    el('td', { class: 'num', text: bytes(m.size) }),
    el('td', { text: m.derived ? (m.rendered ? 'rendered' : 'made on first read') : 'stored' }),
    el('td', { class: 'hash', text: m.sha256 || '' })));
  return el('table', { class: 'files' },
    el('thead', {}, el('tr', {}, el('th', { text: 'Download' }), el('th', { class: 'num', text: 'Size' }),
      el('th', { text: 'Kind' }), el('th', { text: 'SHA-256' }))),
    el('tbody', {}, rows));
}

// A signed link to one of the call's files (POST …/links), for a ticket or
// a colleague without a login: it acts with this user's rights.
function linkSection(call) {
  const file = el('select', { id: 'link-file', 'aria-label': 'file' },
    ...call.media.map(m => el('option', { value: m.name, text: m.name })));
  const ttl = el('select', { id: 'link-ttl', 'aria-label': 'valid for' },
    ...[[3600, '1 hour'], [86400, '1 day'], [604800, '7 days']].map(([v, t]) => el('option', { value: String(v), text: t })));
  const uses = el('input', { id: 'link-uses', type: 'number', min: '1', max: '1000', value: '1', required: true, 'aria-label': 'downloads allowed' });
  const result = el('div', { id: 'link-result', role: 'status' });
  const make = async ev => {
    ev.preventDefault();
    result.replaceChildren();
    try {
      const r = await api(mediaUrl(call.id, file.value) + '/links',
        { method: 'POST', json: { ttl_secs: Number(ttl.value), max_uses: Number(uses.value) } });
      const url = el('input', { id: 'link-url', readonly: true, value: r.url, size: '70', 'aria-label': 'the link' });
      const copy = el('button', { type: 'button', id: 'link-copy', text: 'Copy' });
      copy.addEventListener('click', async () => {
        url.select();
        try { await navigator.clipboard.writeText(r.url); copy.textContent = 'Copied'; } catch (e) { copy.textContent = 'Selected: copy it'; }
      });
      result.replaceChildren(url, copy, el('p', { class: 'muted', id: 'link-note',
        text: 'Valid until ' + when(r.expires_at) + ' for ' + r.max_uses + (r.max_uses === 1 ? ' download' : ' downloads') +
          '. Anyone holding it can download ' + r.name + '.' }));
      url.select();
    } catch (e) {
      if (e.status !== 401) result.replaceChildren(failed(e));
    }
  };
  return el('section', { class: 'links' }, el('h2', { text: 'Share a download link' }),
    el('form', { class: 'controls', id: 'link-form', onsubmit: make },
      el('label', {}, 'File ', file), el('label', {}, 'Valid for ', ttl), el('label', {}, 'Downloads ', uses),
      el('button', { type: 'submit', id: 'link-make', text: 'Make link' })),
    result);
}

async function callView(id) {
  show(el('p', { class: 'muted', text: 'Loading ' + id + '…' }));
  let call;
  try {
    call = await api('/v1/calls/' + encodeURIComponent(id));
  } catch (e) {
    if (e.status !== 401) show(el('h1', { text: 'Call ' + id }), failed(e));
    return;
  }
  state.next = { player: null, timers: [] };
  const mp4 = call.media.find(m => m.derived && m.name === call.session_id + '.mp4');
  const parties = ['agent', 'user']
    .map(p => call.media.find(m => m.name === p + '.webm') || call.media.find(m => m.name === p + '.mp4'))
    .filter(Boolean);
  const parts = [
    el('p', {}, el('a', { href: '#/day/' + call.day, text: '← calls of ' + call.day })),
    el('h1', { text: 'Call ' + call.session_id }),
    facts(call),
  ];
  if (mp4) parts.push(mp4Section(call, mp4));
  if (parties.length === 2) parts.push(dualSection(call, parties));
  parts.push(el('section', {}, el('h2', { text: 'Files' }), fileTable(call)));
  if (state.me && state.me.permissions.download) parts.push(linkSection(call));
  parts.push(el('section', {}, el('h2', { text: 'Streams' }), streamTable(call.streams)));
  if (state.me && state.me.permissions.delete) {
    const msg = el('p', { role: 'alert', id: 'erase-result' });
    parts.push(el('section', {}, el('h2', { text: 'Erase' }),
      el('button', { type: 'button', class: 'danger', id: 'erase', onclick: async () => {
        if (!confirm('Erase call ' + call.id + ' and every file of it? This cannot be undone.')) return;
        try {
          await api('/v1/calls/' + encodeURIComponent(call.id), { method: 'DELETE' });
          location.hash = '#/day/' + call.day;
        } catch (e) { msg.replaceChildren(failed(e)); }
      } }, 'Erase this call'), msg));
  }
  show(...parts);
  // What runs while this page is shown (show() stops what ran before).
  state.player = state.next.player;
  state.timers = state.next.timers.map(f => setInterval(f, 100));
}

// ---------------------------------------------------------------- routing

function route() {
  if (!state.me) return;
  const h = location.hash.slice(1) || '/';
  let m;
  if ((m = h.match(/^\/call\/(.+)$/))) return callView(decodeURIComponent(m[1]));
  if ((m = h.match(/^\/day\/(\d{4}-\d{2}-\d{2})$/))) return dayView(m[1]);
  if ((m = h.match(/^\/month\/(\d{4}-\d{2})$/))) return monthView(m[1]);
  if ((m = h.match(/^\/search(?:\?(.*))?$/))) return searchView(new URLSearchParams(m[1] || ''));
  return dayView(ymd(new Date()));
}

window.addEventListener('hashchange', route);

(async () => {
  try {
    state.me = await api('/session');
    loggedIn();
  } catch (e) {
    login(e.status === 401 ? '' : e.message);
  }
})();
