/*! ma-pipeline tracking tag, served at GET /t.js */
/*
 * Embed on every page (the first line loads the tag, the second lets the page call ma.* before
 * it has loaded; those calls are queued in ma.q and replayed):
 *
 *   <script async src="https://collect.example.com/t.js" data-site="acme" data-key="wk_acme_public_7d1f3a"></script>
 *   <script>window.ma=window.ma||{q:[]};['track','identify','page'].forEach(function(m){ma[m]=ma[m]||function(){ma.q.push([m].concat([].slice.call(arguments)))}});</script>
 *
 * Then:   ma.track('trial_started', {plan: 'pro'});   ma.identify('ann@acme.io', {title: 'CTO'});
 *         ma.page();   <form data-ma-form="demo-request"> ... </form>
 *         ma.anonymous_id   (the ma_aid value, e.g. for GET /v1/profile?aid=...)
 *
 * Script attributes: data-site, data-key (the site's public write key), optional data-endpoint
 * (collector base URL; default: the origin of this script's src), data-cookie-domain (default:
 * the broadest domain of this page that accepts cookies, so every subdomain and the collector
 * see one ma_aid; "" = this host only), data-auto-page="false" (no automatic page views).
 *
 * What it does: keeps the first-party cookie ma_aid (UUID4, 2 years); sends a page_view on load
 * and on every SPA URL change; sends ma.track / ma.identify / ma.page calls; captures submits of
 * forms marked data-ma-form (email + other fields, never passwords, tokens or card numbers).
 * Events are batched for 60 ms and POSTed to {base}/v1/batch as text/plain JSON (no CORS
 * preflight) with fetch keepalive; on pagehide, when the tab is hidden, and on form submits with
 * navigator.sendBeacon. Failed sends (network error, 408, 429, 5xx) wait in localStorage "ma_q"
 * (at most 500 events, 7 days) and are retried with backoff 1 s, 2 s, 4 s ... 60 s and on the
 * next page load, with the same event_id (the pipeline deduplicates on it). It never throws into
 * the page, never delays it, and defines no global but window.ma.
 */
(() => {
  'use strict';
  const w = window, d = document;
  const COOKIE = 'ma_aid', QUEUE = 'ma_q', MAX_QUEUE = 500, MAX_AGE = 7 * 864e5;
  const MAX_EVENTS = 100, MAX_BYTES = 60000; // collector: 100 events; keepalive/beacon: 64 KB
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  // Every entry point from the page or the browser goes through guard: the tag must never throw.
  const guard = (fn) => function () {
    try {
      return fn.apply(this, arguments);
    } catch (e) { /* a tracking failure must not break the page */ }
  };

  const uuid = () => {
    const c = w.crypto;
    if (c && c.randomUUID) return c.randomUUID(); // secure contexts only
    const b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = (Math.random() * 256) | 0;
    b[6] = (b[6] & 15) | 64; // version 4
    b[8] = (b[8] & 63) | 128; // RFC 4122 variant
    const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join('');
    return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
  };
  const cut = (s, n) => (typeof s === 'string' ? s.slice(0, n) : s) || undefined;

  const start = () => {
    const ma = (w.ma = w.ma || { q: [] });
    if (ma.loaded) return; // the tag was embedded twice
    const script = d.currentScript || d.querySelector('script[data-site]');
    if (!script) return;
    const attr = (name) => script.getAttribute('data-' + name);
    const site = attr('site'), key = attr('key');
    if (!site || !key) return;
    const endpoint = (attr('endpoint') || new URL(script.src, location.href).origin).replace(/\/+$/, '') + '/v1/batch';
    ma.loaded = true;

    // --- the ma_aid cookie ------------------------------------------------------------------
    let garbage = false;
    const readAid = () => {
      for (const part of d.cookie.split(';')) {
        const i = part.indexOf('=');
        if (part.slice(0, i).trim() !== COOKIE) continue;
        const value = part.slice(i + 1).trim();
        if (UUID.test(value)) return value;
        garbage = true; // "undefined", "null", "", not UUID-shaped: replaced below
      }
    };
    const cookieDomain = () => {
      const set = attr('cookie-domain');
      if (set !== null) return set;
      const host = location.hostname, parts = host.split('.');
      if (parts.length < 2 || /^[\d.]+$|:/.test(host)) return ''; // localhost, IP addresses
      // Broadest first; the browser refuses public suffixes (co.uk, github.io), so probe.
      const probe = 'ma_probe=' + uuid();
      for (let i = parts.length - 2; i >= 0; i--) {
        const domain = parts.slice(i).join('.');
        d.cookie = probe + '; Path=/; Domain=' + domain;
        if (d.cookie.indexOf(probe) >= 0) {
          d.cookie = 'ma_probe=; Max-Age=0; Path=/; Domain=' + domain;
          return domain;
        }
      }
      return '';
    };
    const aid = readAid() || uuid();
    const domain = cookieDomain();
    if (garbage && domain) d.cookie = COOKIE + '=; Max-Age=0; Path=/'; // a host-only leftover
    d.cookie = COOKIE + '=' + aid + '; Max-Age=63072000; Path=/; SameSite=Lax' +
      (domain ? '; Domain=' + domain : '') + (location.protocol === 'https:' ? '; Secure' : '');
    ma.anonymous_id = aid;

    // --- the retry queue in localStorage (in memory when storage is unavailable) ------------
    let memory = null;
    const load = () => {
      let q;
      try {
        q = memory || JSON.parse(localStorage.getItem(QUEUE) || '[]');
      } catch (e) {
        q = [];
      }
      const oldest = Date.now() - MAX_AGE;
      return Array.isArray(q) ? q.filter((e) => e && e.event_id && e.ts > oldest) : [];
    };
    const save = (q) => {
      q = q.slice(-MAX_QUEUE); // drop the oldest
      if (memory) return void (memory = q);
      try {
        if (q.length) localStorage.setItem(QUEUE, JSON.stringify(q));
        else localStorage.removeItem(QUEUE);
      } catch (e) {
        memory = q;
      }
    };
    const ids = (evs) => new Set(evs.map((e) => e.event_id));
    const store = (evs) => {
      if (!evs.length) return;
      const add = ids(evs);
      save(load().filter((e) => !add.has(e.event_id)).concat(evs));
    };
    const unstore = (evs) => {
      const done = ids(evs), q = load(), rest = q.filter((e) => !done.has(e.event_id));
      if (rest.length !== q.length) save(rest);
    };

    // --- sending ------------------------------------------------------------------------------
    const body = (evs) => JSON.stringify({ site_id: site, write_key: key, events: evs });
    const utf8 = new TextEncoder(); // not Blob: every Blob is a round trip to the browser process
    const bytes = (s) => utf8.encode(s).length;
    // The longest head of evs that fits one request (at least one event).
    const chunk = (evs) => {
      let size = bytes(body([])), n = 0;
      while (n < evs.length && n < MAX_EVENTS) {
        size += bytes(JSON.stringify(evs[n])) + 1;
        if (n && size > MAX_BYTES) break;
        n++;
      }
      return evs.slice(0, n);
    };
    // true when the events are done with (accepted, or refused for good: 400, 413), false to retry.
    const post = (evs) => Promise.resolve()
      .then(() => {
        const b = body(evs);
        return fetch(endpoint, {
          method: 'POST', body: b, credentials: 'include', keepalive: bytes(b) < MAX_BYTES,
          headers: { 'Content-Type': 'text/plain;charset=UTF-8' }, // CORS-safelisted: no preflight
        });
      })
      // Read the answer: until then Chromium counts the body against the 64 KB keepalive quota.
      .then((r) => r.text().then(() => r.status, () => r.status))
      .then((status) => !(status === 408 || status === 429 || status >= 500), () => false);
    const beacon = (evs) => {
      try {
        return navigator.sendBeacon(endpoint, body(evs)); // a string goes as text/plain;charset=UTF-8
      } catch (e) {
        return false;
      }
    };

    let buffer = [], timer = 0, busy = false, waiting = 0, attempt = 0;
    // One request at a time: new events first, then events stored by failed sends or earlier pages.
    const pump = guard(() => {
      timer = 0;
      if (busy) return; // called again when the request in flight settles
      if (waiting) return store(buffer.splice(0)); // backing off: the retry takes them along
      const stored = !buffer.length;
      const evs = chunk(stored ? load() : buffer);
      if (!evs.length) return;
      if (!stored) buffer.splice(0, evs.length);
      busy = true;
      post(evs).then(guard((done) => {
        busy = false;
        if (done) {
          attempt = 0;
          if (stored) unstore(evs);
          return pump();
        }
        if (!stored) store(evs);
        store(buffer.splice(0));
        waiting = setTimeout(() => { waiting = 0; pump(); }, Math.min(60000, 1000 * 2 ** attempt++));
      }));
    });
    const schedule = () => { if (!timer) timer = setTimeout(pump, 60); };
    // The page is going away (or may be killed in the background): beacons survive it.
    const drain = () => {
      clearTimeout(timer);
      timer = 0;
      while (buffer.length) {
        const evs = chunk(buffer);
        buffer.splice(0, evs.length);
        if (waiting || !beacon(evs)) store(evs); // sent by the next page load
      }
    };
    // A copy: later changes to the page's objects don't alter it, and what can't be sent as JSON
    // (cycles, BigInt) throws here, into guard, instead of blocking the queue.
    const send = (ev) => { buffer.push(JSON.parse(JSON.stringify(ev))); schedule(); };

    // --- events -------------------------------------------------------------------------------
    const event = (type, fields) =>
      Object.assign({ type, event_id: uuid(), anonymous_id: aid, ts: Date.now() }, fields);
    let referrer = d.referrer;
    const pageView = (url, ref, ts, properties) => send(Object.assign(event('page_view', {
      url: cut(url, 4096), referrer: cut(ref, 4096), title: cut(d.title, 2048), properties,
    }), ts ? { ts } : {}));
    const api = {
      track: (name, properties) => send(event('custom', { name, properties })),
      identify: (email, traits) => send(event('identify', { email, traits })),
      page: (properties) => pageView(location.href, referrer, 0, properties),
    };

    // --- single-page apps: one page_view per URL change -----------------------------------------
    // A change of the #fragment alone is an in-page anchor, unless it is a #/ or #! route.
    const route = (u) => {
      const i = u.indexOf('#');
      return i < 0 || /^#[!/]/.test(u.slice(i)) ? u : u.slice(0, i);
    };
    let last = location.href;
    const navigated = guard(() => {
      const url = location.href, prev = last;
      last = url;
      if (route(url) === route(prev)) return;
      referrer = prev;
      const ts = Date.now();
      setTimeout(guard(() => pageView(url, prev, ts)), 60); // let the app set its new title
    });
    const auto = attr('auto-page') !== 'false';
    if (auto) {
      for (const m of ['pushState', 'replaceState']) {
        const original = history[m];
        if (typeof original !== 'function') continue;
        history[m] = function () {
          const result = original.apply(this, arguments); // the page's errors stay the page's
          navigated();
          return result;
        };
      }
      w.addEventListener('popstate', navigated);
    }

    // --- forms marked data-ma-form --------------------------------------------------------------
    const SKIP_TYPE = /^(password|file|submit|button|reset|image)$/;
    const SECRET = /^_|csrf|xsrf|token|nonce|captcha|authenticity|passw|card|cvv|cvc|iban|ssn/i;
    const EMAIL = /(^|[^a-z])e-?mail|^mail$/i; // email, e-mail, user[email], emailAddress, mail
    const isCardNumber = (v) => {
      const s = v.replace(/[\s-]/g, '');
      if (!/^\d{13,19}$/.test(s)) return false;
      let sum = 0;
      for (let i = 0; i < s.length; i++) {
        let x = +s[s.length - 1 - i];
        if (i % 2 && (x *= 2) > 9) x -= 9;
        sum += x;
      }
      return sum % 10 === 0; // Luhn
    };
    const onSubmit = (e) => {
      const form = e.target;
      if (!form || form.tagName !== 'FORM' || !form.hasAttribute('data-ma-form')) return;
      const fields = Array.from(form.elements || []).filter((f) =>
        f.name && typeof f.value === 'string' && !f.disabled && !SKIP_TYPE.test(f.type) &&
        !f.closest('[data-ma-ignore]'));
      const filled = (f) => f.value.trim();
      const emailField = fields.find((f) => f.type === 'email' && filled(f)) ||
        fields.find((f) => EMAIL.test(f.name) && filled(f));
      const traits = Object.create(null);
      let count = 0;
      for (const f of fields) {
        if (f === emailField || f.name.length > 128 || SECRET.test(f.name)) continue;
        if (/^cc-/.test(f.autocomplete || '')) continue;
        if ((f.type === 'checkbox' || f.type === 'radio') && !f.checked) continue;
        let value = f.type === 'select-multiple'
          ? Array.from(f.selectedOptions, (o) => o.value.slice(0, 2000))
          : cut(f.value, 2000) || '';
        if (typeof value === 'string' && isCardNumber(value)) continue;
        if (f.type === 'checkbox' && value === 'on') value = true;
        if (f.name in traits) traits[f.name] = [].concat(traits[f.name], value); // checkbox groups
        else if (count++ < 100) traits[f.name] = value;
      }
      send(event('form_submit', {
        form_id: cut(form.getAttribute('data-ma-form') || form.getAttribute('id'), 200),
        email: emailField ? emailField.value.trim() : undefined,
        traits,
        url: cut(location.href, 4096),
      }));
      drain(); // a beacon: neither delays nor prevents the submit and its navigation
    };

    // --- start ----------------------------------------------------------------------------------
    const call = guard((c) => {
      if (c && api[c[0]]) api[c[0]].apply(null, Array.prototype.slice.call(c, 1));
    });
    for (const m in api) ma[m] = guard(api[m]);
    if (auto) pageView(location.href, referrer, 0);
    const queued = Array.isArray(ma.q) ? ma.q : [];
    const replay = queued.splice(0);
    // Stubs captured before load still push to this array: run what they push from now on.
    queued.push = function () {
      Array.prototype.forEach.call(arguments, call);
      return 0;
    };
    ma.q = queued;
    replay.forEach(call);
    d.addEventListener('submit', guard(onSubmit), true); // capture: also forms added later
    w.addEventListener('pagehide', guard(drain));
    d.addEventListener('visibilitychange', guard(() => {
      if (d.visibilityState === 'hidden') drain();
    }));
    schedule(); // events stored by an earlier page
  };
  guard(start)();
})();
