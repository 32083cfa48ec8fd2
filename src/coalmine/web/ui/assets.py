"""The dashboard's static parts: the HTML shell, its script and its stylesheet.

Constants with no data in them, served to anyone: the script fetches every
fragment with the token the operator pastes (kept in sessionStorage), follows
the shown release's app over its routing SSE stream (read with fetch(), so the
token travels in a header), re-fetches on each change, and polls (every second
without a stream, every five with one) for what changes without an event.
"""

from __future__ import annotations

__all__ = ["CSP", "SCRIPT", "SHELL", "STYLE"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>coalmine</title>
<link rel="stylesheet" href="/ui/ui.css">
<script src="/ui/ui.js" defer></script>
</head><body>
<header><a href="#/">coalmine</a>
<form id="token-form"><input id="token" type="password" autocomplete="off"
 placeholder="paste a token (viewer to read, deployer to operate)">
<button type="submit" id="token-save">use token</button>
<button type="button" id="token-forget">forget</button></form>
<span id="live" data-mode="polling" data-events="0">polling</span>
<span id="status" role="status"></span></header>
<main id="view"><p>Paste a token to see apps and releases.</p></main>
</body></html>
"""

SCRIPT = r"""'use strict';
(function () {
  const KEY = 'coalmine-token';
  const POLL_MS = 1000;  // without a live stream: re-read the shown fragment this often
  const LIVE_POLL_MS = 5000;  // with one: metrics and analysis runs change without an event
  const view = document.getElementById('view');
  const status = document.getElementById('status');
  const mode = document.getElementById('live');
  let busy = false;
  let again = false;
  let last = 0;
  let stream = null;  // {app, ctl, live} of the routing stream followed

  function token() { return sessionStorage.getItem(KEY) || ''; }
  function route() {
    const m = /^#\/releases\/([^/]+)$/.exec(location.hash);
    return m ? '/ui/fragments/releases/' + m[1] : '/ui/fragments/apps';
  }
  function show() {
    const live = stream !== null && stream.live;
    mode.dataset.mode = live ? 'live' : 'polling';
    mode.textContent = live ? 'live' : 'polling';
  }
  function stop() {
    if (stream !== null) { stream.ctl.abort(); stream = null; }
    show();
  }
  // The app's routing stream, read with fetch() so that the token goes in the
  // Authorization header (EventSource cannot send one, and a token in a URL leaks).
  async function follow(app) {
    const me = {app: app, ctl: new AbortController(), live: false};
    stream = me;
    try {
      const r = await fetch('/v1/apps/' + encodeURIComponent(app) + '/routing/stream', {
        headers: {Authorization: 'Bearer ' + token(), Accept: 'text/event-stream'},
        cache: 'no-store', signal: me.ctl.signal});
      if (!r.ok || r.body === null) { return; }
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) { return; }
        buf += chunk.value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const message = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const kind = /^event: (\S+)$/m.exec(message);
          if (kind && kind[1] === 'snapshot') {
            mode.dataset.events = String(Number(mode.dataset.events) + 1);
            if (!me.live) { me.live = true; show(); }
            refresh();
          }
        }
      }
    } catch (e) {
      // aborted, or the stream dropped: polling goes on, and the next refresh reconnects
    } finally {
      if (stream === me) { stream = null; show(); }
    }
  }
  function follows() {
    const section = view.querySelector('section.release');
    const app = section ? section.dataset.app : null;
    if (!app) { stop(); return; }
    if (stream === null || stream.app !== app) { stop(); follow(app); }
  }
  async function refresh() {
    if (!token()) { return; }
    if (busy) { again = true; return; }  // a change came in during a read: read once more
    busy = true;
    last = Date.now();
    try {
      const r = await fetch(route(), {headers: {Authorization: 'Bearer ' + token()}});
      if (r.ok) {
        view.innerHTML = await r.text();
        status.textContent = '';
        follows();
      } else {
        status.textContent = 'HTTP ' + r.status + ': ' + (await r.json()).detail;
        if (r.status === 401 || r.status === 403) { stop(); }
      }
    } catch (e) {
      status.textContent = 'cannot reach the control plane';
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  function tick() {
    const live = stream !== null && stream.live;
    if (Date.now() - last >= (live ? LIVE_POLL_MS : POLL_MS) - 50) { refresh(); }
  }
  async function operate(button) {
    let t = token();
    if (!t) {
      t = window.prompt('a deployer token to ' + button.dataset.op + ' this release') || '';
      if (!t) { return; }
      sessionStorage.setItem(KEY, t);
    }
    const url = '/v1/releases/' + encodeURIComponent(button.dataset.release) + '/' +
      button.dataset.op;
    const r = await fetch(url, {method: 'POST', headers: {
      Authorization: 'Bearer ' + t, 'Content-Type': 'application/json'},
      body: JSON.stringify({reason: 'from the dashboard'})});
    status.textContent = r.ok ? button.dataset.op + ': done'
      : button.dataset.op + ': HTTP ' + r.status + ': ' + (await r.json()).detail;
    await refresh();
  }
  document.getElementById('token-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    const input = document.getElementById('token');
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = '';
    stop();
    refresh();
  });
  document.getElementById('token-forget').addEventListener('click', function () {
    sessionStorage.removeItem(KEY);
    stop();
    view.innerHTML = '<p>Paste a token to see apps and releases.</p>';
  });
  view.addEventListener('click', function (ev) {
    const b = ev.target.closest('button.op');
    if (b) { operate(b); }
  });
  window.addEventListener('hashchange', refresh);
  show();
  setInterval(tick, 250);
  refresh();
})();
"""

STYLE = """body{font-family:sans-serif;margin:0;color:#222}
header{display:flex;gap:1em;align-items:center;padding:.5em 1em;background:#333;color:#eee}
header a{color:#fff;font-weight:bold}
#live{font-size:80%;padding:0 .4em;border-radius:3px;background:#666}
#live[data-mode=live]{background:#2a2}
main{padding:1em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
.alert{color:#b00;font-weight:bold}
tr.fail{background:#fdd}tr.inconclusive{background:#ffd}
.plan{display:flex;gap:.5em;list-style:none;padding:0}
.step{border:1px solid #999;padding:2px 6px}.step.current{background:#cef}.step.done{color:#888}
.chart{width:640px;height:180px;display:block;border:1px solid #eee;margin:.5em 0}
.chart .axis{stroke:#999}.chart .line{fill:none;stroke:#06c;stroke-width:2}
.chart .point{fill:#06c}.chart .tick,.chart .legend{font-size:10px}
.chart .line.canary{stroke:#d60}.chart .line.stable{stroke:#06c}
.chart .dot.canary{fill:#d60}.chart .dot.stable{fill:#06c}
.chart .legend.canary{fill:#d60}.chart .legend.stable{fill:#06c}
.chart .line.p50{stroke-dasharray:2 3;stroke-width:1}.chart .line.p95{stroke-dasharray:6 3}
.function-charts{display:flex;flex-wrap:wrap;gap:.5em}
table.chain tr.changed td{background:#fec}
.marker line{stroke:#999;stroke-dasharray:3}.marker text{font-size:9px}
.marker.rollback line{stroke:#b00}.marker.alarm line{stroke:#d60}
.ops button{margin-right:.5em}
"""
