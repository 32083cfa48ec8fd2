"""The dashboard's static parts: the HTML shell, its script and its stylesheet.

Constants with no data in them, served to anyone: the script fetches every
fragment with the token the operator pastes (kept in sessionStorage) and
re-fetches the shown fragment every second.
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
<span id="status" role="status"></span></header>
<main id="view"><p>Paste a token to see apps and releases.</p></main>
</body></html>
"""

SCRIPT = r"""'use strict';
(function () {
  const KEY = 'coalmine-token';
  const view = document.getElementById('view');
  const status = document.getElementById('status');
  let busy = false;

  function token() { return sessionStorage.getItem(KEY) || ''; }
  function route() {
    const m = /^#\/releases\/([^/]+)$/.exec(location.hash);
    return m ? '/ui/fragments/releases/' + m[1] : '/ui/fragments/apps';
  }
  async function refresh() {
    if (busy || !token()) { return; }
    busy = true;
    try {
      const r = await fetch(route(), {headers: {Authorization: 'Bearer ' + token()}});
      if (r.ok) { view.innerHTML = await r.text(); status.textContent = ''; }
      else { status.textContent = 'HTTP ' + r.status + ': ' + (await r.json()).detail; }
    } catch (e) {
      status.textContent = 'cannot reach the control plane';
    } finally { busy = false; }
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
    refresh();
  });
  document.getElementById('token-forget').addEventListener('click', function () {
    sessionStorage.removeItem(KEY);
    view.innerHTML = '<p>Paste a token to see apps and releases.</p>';
  });
  view.addEventListener('click', function (ev) {
    const b = ev.target.closest('button.op');
    if (b) { operate(b); }
  });
  window.addEventListener('hashchange', refresh);
  setInterval(refresh, 1000);
  refresh();
})();
"""

STYLE = """body{font-family:sans-serif;margin:0;color:#222}
header{display:flex;gap:1em;align-items:center;padding:.5em 1em;background:#333;color:#eee}
header a{color:#fff;font-weight:bold}
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
.chart .legend.canary{fill:#d60}.chart .legend.stable{fill:#06c}
.chart .line.p50{stroke-dasharray:2 3;stroke-width:1}.chart .line.p95{stroke-dasharray:6 3}
.function-charts{display:flex;flex-wrap:wrap;gap:.5em}
table.chain tr.changed td{background:#fec}
.marker line{stroke:#999;stroke-dasharray:3}.marker text{font-size:9px}
.marker.rollback line{stroke:#b00}.marker.alarm line{stroke:#d60}
.ops button{margin-right:.5em}
"""
