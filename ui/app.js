// AMC Sync dashboard. Plain ES module, no build step, no dependencies.
// Served by the agent (CSP: script-src 'self'; style-src 'self'), so no inline
// scripts, styles or event-handler attributes anywhere: everything is wired here.
// API contract: docs/admin-api.md.

const TOKEN_KEY = 'amcSyncAdminToken';
const POLL_MS = 2000;
const POLL_MAX_MS = 30000;
const REQUEST_TIMEOUT_MS = 20000;
const VIEWS = ['status', 'audiences', 'dead-letters', 'connection', 'settings'];
const CURRENCIES = ['AED', 'AUD', 'CAD', 'CNY', 'EUR', 'GBP', 'INR', 'JPY', 'MXN', 'SAR', 'SEK', 'TRY', 'USD'];
const MAX_TTL_SECS = 34300800;

// Plain-language explanations of dead-letter reason codes (the codes come from
// src/mapping, src/pii, src/store, src/ingest and src/sync). `retry` says whether
// "Retry" can help: input errors carry no payload (raw data is never kept), so
// the source has to send them again, corrected.
const REASONS = {
  consent_required: {
    text: 'The person is in the UK, the EEA or Switzerland and the event carried no consent. Amazon accepts such records only with consent: send amznAdStorage and amznUserData set to GRANTED (context.consent), or a TCF or GPP consent string.',
    retry: false,
  },
  invalid_consent_value: {
    text: 'A consent value (amznAdStorage / amznUserData) was something other than GRANTED or DENIED.',
    retry: false,
  },
  no_identifiers: {
    text: 'No usable personal identifier was left: the event had no email, phone, name or address, or every one of them was empty or invalid after normalization (for example an email without "@"). Amazon cannot match a person without one.',
    retry: false,
  },
  missing_external_user_id: {
    text: 'The event had no user id (Segment userId, or the external_user_id / user_id column of a CSV). Every record needs one.',
    retry: false,
  },
  invalid_external_user_id: {
    text: 'The user id contains characters Amazon does not accept. It must be 1–128 letters, digits, "_" or "-".',
    retry: false,
  },
  invalid_country_code: {
    text: 'The country is not a two-letter ISO 3166-1 code (like US or DE) nor UNKNOWN.',
    retry: false,
  },
  missing_audience_key: {
    text: 'The event did not say which audience it belongs to: no context.personas.computation_key, no properties.audience_key, and (for CSV files) no audience_key column or file name.',
    retry: false,
  },
  invalid_external_audience_id: {
    text: 'context.personas.external_audience_id was set but is not an Amazon audienceId (digits only).',
    retry: false,
  },
  invalid_membership_flag: {
    text: 'The audience flag (properties or traits named after the audience) must be true or false.',
    retry: false,
  },
  membership_contradiction: {
    text: 'The audience flag and the event name disagree, e.g. flag true on "Audience Exited".',
    retry: false,
  },
  no_membership_signal: {
    text: 'The event neither was "Audience Entered"/"Audience Exited" nor carried a true/false flag for the audience, so it is unclear whether the person enters or leaves.',
    retry: false,
  },
  unknown_audience: {
    text: 'The change named an audience that does not exist in AMC Sync. Create the audience (Audiences view) or send its audience_settings, then send the events again.',
    retry: false,
  },
  invalid_hashed_pii: {
    text: 'A pre-hashed value was not a 64-character lowercase SHA-256 digest; it was dropped so that raw personal data is never stored.',
    retry: false,
  },
  invalid_message: {
    text: 'The message is not a valid Segment message (not a JSON object, or no "type").',
    retry: false,
  },
  unsupported_message_type: {
    text: 'The message "type" is not a Segment type (track, identify, page, screen, group, alias).',
    retry: false,
  },
  not_an_object: { text: 'An item of the batch or a line of the file is not a JSON object.', retry: false },
  message_too_large: { text: 'The message is larger than the 32 KB Segment allows per message.', retry: false },
  type_mismatch: { text: 'The message was sent to /v1/track or /v1/identify with a different "type".', retry: false },
  invalid_json: { text: 'A line of a dropped file is not valid JSON.', retry: false },
  line_too_long: { text: 'A line of a dropped file is too long to be one message.', retry: false },
  invalid_utf8: { text: 'A line of a dropped file is not valid UTF-8 text.', retry: false },
  csv_malformed_row: { text: 'A CSV row has a different number of fields than the header, or cannot be read.', retry: false },
  invalid_action: { text: 'A CSV "action" value is not add, remove, CREATE, DELETE, true or false.', retry: false },
  amazon_invalid_record: {
    text: 'Amazon refused this person\'s data (usually the user id or email). Retrying sends the identical record and will fail again. Correct the user\'s id or email in Segment or your CRM; the corrected record is uploaded automatically.',
    retry: 'futile',
  },
  amazon_rejected_record: {
    text: 'Amazon refused this record even when it was sent alone (Amazon\'s message is shown). If the message is about the audience or your account (for example a missing permission), fix that and then retry. If it is about the person\'s data, retrying sends the identical record and will fail again: correct it in Segment or your CRM instead; the corrected record is uploaded automatically.',
    retry: 'maybe',
  },
  amazon_job_failed: {
    text: 'Amazon\'s upload job failed as a whole; the record itself is probably fine. Retry re-sends it.',
    retry: true,
  },
  record_too_large: {
    text: 'The record is larger than the request size limit for one upload (too many identifiers for one user).',
    retry: false,
  },
};

// Short headlines of the reason codes, in words (the code is shown next to them, smaller).
const REASON_TITLES = {
  consent_required: 'No consent (UK, EEA or Switzerland)',
  invalid_consent_value: 'Consent value not understood',
  no_identifiers: 'No email, phone or address',
  missing_external_user_id: 'No user id',
  invalid_external_user_id: 'User id not accepted',
  invalid_country_code: 'Country not recognised',
  missing_audience_key: 'No audience named',
  invalid_external_audience_id: 'Amazon audience id not valid',
  invalid_membership_flag: 'Audience flag not true or false',
  membership_contradiction: 'Enter and exit signals disagree',
  no_membership_signal: 'Unclear whether the person enters or leaves',
  unknown_audience: 'Audience does not exist',
  invalid_hashed_pii: 'Pre-hashed value not valid',
  invalid_message: 'Not a Segment message',
  unsupported_message_type: 'Unknown Segment message type',
  not_an_object: 'Not a JSON object',
  message_too_large: 'Message too large',
  type_mismatch: 'Wrong message type for this address',
  invalid_json: 'Not valid JSON',
  line_too_long: 'Line too long',
  invalid_utf8: 'Not readable text (UTF-8)',
  csv_malformed_row: 'CSV row cannot be read',
  invalid_action: 'CSV action not understood',
  amazon_invalid_record: 'Rejected by Amazon',
  amazon_rejected_record: 'Refused by Amazon',
  amazon_job_failed: 'Amazon upload job failed',
  record_too_large: 'Record too large',
};
const reasonTitle = (k) => REASON_TITLES[k] || String(k || 'Unknown reason').replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase());

const SOURCES = { http: 'Segment', file: 'Drop folder or import', upload: 'Upload to Amazon' };

const REGION_NAMES = { NA: 'North America', EU: 'Europe', FE: 'Far East' };
const regionName = (r) => (REGION_NAMES[r] ? `${REGION_NAMES[r]} (${r})` : String(r || '—'));
const COUNTRY_REGION = {};
for (const c of ['US', 'CA', 'MX', 'BR']) COUNTRY_REGION[c] = 'NA';
for (const c of ['GB', 'DE', 'FR', 'IT', 'ES', 'NL', 'SE', 'PL', 'TR', 'AE', 'SA', 'EG', 'IN']) COUNTRY_REGION[c] = 'EU';
for (const c of ['JP', 'AU', 'SG']) COUNTRY_REGION[c] = 'FE';

// "vip targets US but uploads go to EU — US audiences belong in NA." (null when it fits or is unknown)
function regionMismatch(key, country, active) {
  const cc = String(country || '').toUpperCase();
  const want = COUNTRY_REGION[cc];
  if (!want || !active || want === active) return null;
  return `${key} targets ${cc} but uploads go to ${active} — ${cc} audiences belong in ${want}.`;
}

// What the user should do about the auth state (Status page; the Connection page has its own).
const AUTH_HELP = {
  ok: 'Connected to Amazon Ads. Queued changes are uploaded on schedule.',
  refreshing: 'Refreshing the Amazon access token…',
  needs_login: 'Amazon Ads has no usable login for this region (it expired or was revoked, or you have not logged in for this region yet). Everything keeps being queued. Log in with Amazon on the Connection page.',
  no_credentials: 'No Amazon Ads login is stored, so nothing is uploaded yet. Everything received is queued and kept. Log in with Amazon on the Connection page.',
};
const CONN_HELP = {
  ok: 'Connected to Amazon Ads. Queued changes are uploaded on schedule.',
  refreshing: 'Refreshing the Amazon access token…',
  needs_login: 'Amazon no longer accepts the stored login for this region (it expired or was revoked). Everything keeps being queued. Log in with Amazon below.',
  no_credentials: 'No Amazon Ads login is stored, so nothing is uploaded yet. Everything received is queued and kept. Log in with Amazon below.',
};

// API error codes in words (the code itself is shown next to them, smaller).
const ERROR_TEXT = {
  forbidden_host: 'The agent refused this page\'s address. Open the dashboard from AMC Sync.',
  forbidden_origin: 'The agent refused a request from this page. Open the dashboard from AMC Sync.',
  unauthorized: 'The agent refused this page\'s admin token. Open the dashboard again from AMC Sync.',
  invalid_json: 'The agent could not read what the dashboard sent. Reload the page and try again.',
  not_found: 'That was not found (it may have been removed already). Reload the page.',
  store_unavailable: 'AMC Sync\'s local database is busy or unavailable. Try again in a moment; if it keeps happening, restart AMC Sync.',
  conflict: 'That does not fit the current state. Reload the page and try again.',
  login_client_missing: 'Enter the client id and client secret of your Login with Amazon security profile.',
  login_state_mismatch: 'This login was not started here or was already used. Start the login again.',
  login_expired: 'The login took longer than 10 minutes. Start it again.',
  login_denied: 'The login was cancelled at Amazon. Start it again when you are ready.',
  login_failed: 'Amazon did not finish the login. Start it again.',
  login_code_rejected: 'Amazon refused the login. Check the client secret and that the return URL is listed in your security profile, then try again.',
  login_not_verified: 'Amazon accepted the login but refused access to Amazon Ads. Check that this Amazon account has Amazon Ads access in this region.',
  login_not_saved: 'The login worked but could not be saved on this computer. Try again.',
  login_cancelled: 'The login was cancelled because you logged out.',
  connection_unreadable: 'The stored login could not be read. Log in again to replace it.',
  logout_failed: 'Logging out did not finish: the stored secrets could not be removed. Try again.',
  region_not_saved: 'The region could not be saved. Try again.',
  timeout: 'The agent did not answer in time. Try again.',
  http_error: 'The agent answered with an unexpected error. Try again.',
};
const AUTH_LABEL = { ok: 'Connected', refreshing: 'Refreshing', needs_login: 'Needs login', no_credentials: 'Not logged in' };

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('data')) e.setAttribute(k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()), v);
      else if (k in e && typeof v !== 'string') e[k] = v;
      else e.setAttribute(k, v === true ? '' : v);
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

const numFmt = new Intl.NumberFormat();
const fmtNum = (n) => (typeof n === 'number' ? numFmt.format(n) : '—');
const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

function relTime(ms) {
  if (typeof ms !== 'number') return '—';
  const diff = (ms - Date.now()) / 1000;
  const abs = Math.abs(diff);
  if (abs < 45) return diff < 0 ? 'just now' : 'in a few seconds';
  const units = [['day', 86400], ['hour', 3600], ['minute', 60]];
  for (const [u, s] of units) {
    if (abs >= s) return rtf.format(Math.round(diff / s), u);
  }
  return rtf.format(Math.round(diff), 'second');
}

function timeEl(ms) {
  if (typeof ms !== 'number') return document.createTextNode('—');
  const d = new Date(ms);
  return el('time', { datetime: d.toISOString(), title: d.toLocaleString() }, relTime(ms));
}

function duration(secs) {
  if (typeof secs !== 'number') return '—';
  if (secs < 60) return `${Math.round(secs)} s`;
  if (secs < 3600) return `${Math.round(secs / 60)} min`;
  if (secs < 86400) return `${(secs / 3600).toFixed(1)} h`;
  return `${(secs / 86400).toFixed(1)} days`;
}

function show(node, on) {
  node.hidden = !on;
}

const msgTimers = new WeakMap();
// Success messages fade after 15 s; errors stay until the next action.
// `content` is a string, an error (shown in words, its code smaller) or a list of nodes/strings.
function setMsg(node, content, isError, sticky) {
  if (content instanceof Error) {
    node.replaceChildren(...errorNodes(content));
    isError = true;
  } else if (Array.isArray(content)) {
    node.replaceChildren(...content);
  } else {
    node.textContent = content || '';
  }
  const text = node.textContent;
  node.classList.toggle('error', !!isError);
  clearTimeout(msgTimers.get(node));
  if (text && !isError && !sticky && !/…$/.test(text)) {
    msgTimers.set(node, setTimeout(() => {
      if (node.textContent === text) node.textContent = '';
    }, 15000));
  }
}

function showError(node, err) {
  if (!err) {
    node.hidden = true;
    node.textContent = '';
    return;
  }
  node.hidden = false;
  node.replaceChildren(...errorNodes(err));
}

// An error in plain words; `overrides` maps codes to sentences fitting the action.
function describe(err, overrides) {
  if (err instanceof ApiError) {
    if (overrides && overrides[err.code]) return overrides[err.code];
    if (err.code === 'invalid_field') return `Please check ${err.field ? `the field “${err.field}”` : 'the form'}: ${err.message}`;
    if (err.code === 'agent_unreachable') return err.message;
    return ERROR_TEXT[err.code] || 'Something went wrong. Try again.';
  }
  return String(err && err.message ? err.message : err);
}

// The sentence, then the code (and the agent's own text) in small print.
function errorNodes(err, overrides) {
  const nodes = [describe(err, overrides)];
  if (err instanceof ApiError && err.code && err.code !== 'agent_unreachable') {
    nodes.push(' ', el('small', { class: 'err-code', title: err.message || '' }, err.code));
  }
  return nodes;
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

let token = null;

function readToken() {
  // The tray / `amc-sync dashboard` open http://127.0.0.1:8787/#token=<hex>.
  const frag = location.hash.startsWith('#') ? location.hash.slice(1) : '';
  if (frag.includes('token=')) {
    const params = new URLSearchParams(frag.replace(/^\/?/, ''));
    const t = params.get('token');
    if (t) {
      try {
        sessionStorage.setItem(TOKEN_KEY, t);
      } catch (_) {
        /* storage disabled: keep it in memory */
      }
      token = t;
    }
    // Remove the token from the address bar and history.
    history.replaceState(null, '', location.pathname + location.search + '#/status');
  }
  if (!token) {
    try {
      token = sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      token = null;
    }
  }
  return token;
}

async function api(method, path, body) {
  if (!token) {
    showTokenMissing('no-token');
    throw new ApiError(401, 'unauthorized', 'no admin token');
  }
  const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
  init.signal = ctl.signal;
  try {
    res = await fetch(path, init);
  } catch (e) {
    clearTimeout(timer);
    agentReachable(false);
    if (ctl.signal.aborted) throw new ApiError(0, 'timeout', `The agent did not answer ${method} ${path.split('?')[0]} within ${REQUEST_TIMEOUT_MS / 1000} s.`);
    throw new ApiError(0, 'agent_unreachable', 'The AMC Sync agent is not answering. Is it running?');
  }
  clearTimeout(timer);
  agentReachable(true);
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (res.status === 401) {
    showTokenMissing('refused');
    throw new ApiError(401, (data && data.code) || 'unauthorized', (data && data.message) || 'the agent refused the admin token');
  }
  if (!res.ok) {
    if (data && data.code) throw new ApiError(res.status, data.code, data.message || data.code, data.field);
    if (res.status === 404) throw new ApiError(404, 'not_found', `${method} ${path.split('?')[0]} is not available in this agent version`);
    throw new ApiError(res.status, 'http_error', `${method} ${path.split('?')[0]} answered HTTP ${res.status}`);
  }
  return data;
}

let lastReachable = true;
function agentReachable(ok) {
  if (ok === lastReachable) return;
  lastReachable = ok;
  setMsg($('agent-line'), ok ? '' : 'The agent is not answering — retrying…', !ok);
}

function showTokenMissing(why) {
  stopPolling();
  for (const v of VIEWS) show($(`view-${v}`), false);
  show($('nav'), false);
  show($('token-missing'), true);
  $('token-missing-why').textContent = why === 'refused'
    ? 'The agent refused this page\'s admin token (it belongs to another agent or data dir). Open the dashboard again from AMC Sync.'
    : 'This page needs the agent\'s admin token, which those open it with. It is kept only for this browser tab.';
  if (why === 'refused') {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* ignore */
    }
    token = null;
  }
}

// ---------------------------------------------------------------- confirm dialog

function confirmAction(title, text, okLabel) {
  const dlg = $('confirm-dialog');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel || 'OK';
  return new Promise((resolve) => {
    const done = () => {
      dlg.removeEventListener('close', done);
      resolve(dlg.returnValue === 'ok');
    };
    dlg.returnValue = '';
    dlg.addEventListener('close', done);
    dlg.showModal();
    $('confirm-cancel').focus();
  });
}

// ---------------------------------------------------------------- routing

let currentView = 'status';
let dlAudience = ''; // Dead letters: audience filter from #/dead-letters?audience=<key>

function route(ev) {
  if (!token) return;
  const [h, qs] = location.hash.replace(/^#\/?/, '').split('?');
  const view = VIEWS.includes(h) ? h : 'status';
  dlAudience = view === 'dead-letters' ? new URLSearchParams(qs || '').get('audience') || '' : '';
  currentView = view;
  for (const v of VIEWS) show($(`view-${v}`), v === view);
  for (const a of document.querySelectorAll('#nav a[data-view]')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const h1 = $(`view-${view}`).querySelector('h1');
  document.title = `AMC Sync — ${h1.textContent}`;
  if (ev) {
    // Moved by the user: put keyboard and screen-reader focus on the new view's heading.
    h1.tabIndex = -1;
    h1.focus({ preventScroll: true });
  }
  loadView(view);
}

function loadView(view) {
  if (view === 'audiences') loadAudiences();
  else if (view === 'dead-letters') loadDeadLetters();
  else if (view === 'connection') loadConnection();
  else if (view === 'settings') loadSettings();
  else {
    if (lastStatus) renderStatus(lastStatus);
    loadAudienceMeta();
  }
}

// ---------------------------------------------------------------- status polling

let pollTimer = null;
let pollDelay = POLL_MS;
let polling = false;
let inflight = false;
let pollAgain = false;
let lastRaw = '';
let lastStatus = null;
let lastSignature = '';

function startPolling() {
  if (polling) return;
  polling = true;
  pollDelay = POLL_MS;
  pollNow();
}

function stopPolling() {
  polling = false;
  clearTimeout(pollTimer);
  pollTimer = null;
}

async function pollNow() {
  clearTimeout(pollTimer);
  if (!polling) return;
  if (inflight) {
    // An action asked for fresh numbers while a poll is out: poll again right after it.
    pollAgain = true;
    return;
  }
  inflight = true;
  pollAgain = false;
  try {
    const s = await api('GET', '/api/status');
    pollDelay = POLL_MS;
    showError($('status-error'), null);
    onStatus(s);
  } catch (e) {
    if (e.status === 401) {
      inflight = false;
      return;
    }
    showError($('status-error'), e);
    pollDelay = Math.min(pollDelay * 2, POLL_MAX_MS);
  }
  inflight = false;
  if (polling && document.visibilityState === 'visible') {
    pollTimer = setTimeout(pollNow, pollAgain ? 0 : pollDelay);
  }
}

function onStatus(s) {
  lastStatus = s;
  watchUpload(s);
  // Unchanged status: leave the DOM alone (relative times are refreshed every 30 s).
  const raw = JSON.stringify(s);
  if (raw === lastRaw) return;
  lastRaw = raw;
  renderStatus(s);
  // Refresh the list views when the numbers behind them change (at most once per poll).
  const auds = s.audiences || {};
  const sig = JSON.stringify([s.pendingTotal, s.deadLettersTotal, s.auth, s.region,
    Object.entries(auds).map(([k, a]) => [k, a.pending, a.uploaded, a.failed, a.audienceId])]);
  if (sig !== lastSignature) {
    const first = lastSignature === '';
    lastSignature = sig;
    if (!first) {
      if (currentView === 'status') loadAudienceMeta();
      if (currentView === 'audiences') loadAudiences();
      else if (currentView === 'dead-letters') loadDeadLetters();
      else if (currentView === 'connection') loadConnection();
    }
  }
}

function renderStatus(s) {
  const auth = s.auth || 'unknown';
  const badge = $('auth-badge');
  badge.textContent = AUTH_LABEL[auth] || auth;
  badge.dataset.state = auth;
  badge.title = auth;
  badge.className = `badge state-${auth}`;
  $('auth-help').textContent = AUTH_HELP[auth] || '';
  const waiting = auth !== 'ok' && auth !== 'refreshing';
  show($('auth-action'), waiting);
  $('status-region').textContent = s.region || '—';
  $('status-region').title = regionName(s.region);

  const paused = !!s.paused;
  show($('auth-paused-note'), paused);
  const pb = $('paused-badge');
  pb.textContent = paused ? 'Uploads paused' : waiting ? 'Waiting for login' : 'Uploads running';
  pb.dataset.paused = String(paused);
  pb.dataset.waiting = String(!paused && waiting);
  pb.className = `badge ${paused ? 'state-paused' : waiting ? 'state-waiting' : 'state-running'}`;
  $('btn-pause').disabled = paused;
  $('btn-resume').disabled = !paused;
  const up = $('btn-upload');
  const hint = $('upload-hint');
  if (!uploadBusy) up.disabled = paused || waiting;
  if (paused) {
    hint.replaceChildren('Uploads are paused — press Resume uploads first.');
  } else if (waiting) {
    hint.replaceChildren(el('a', { href: '#/connection' }, 'Log in with Amazon first'), ' (Connection page). Everything is queued until then.');
  }
  show(hint, paused || waiting);
  up.setAttribute('aria-describedby', 'upload-hint');

  const pt = $('pending-total');
  const auds = Object.values(s.audiences || {});
  const pending = typeof s.pendingTotal === 'number' ? s.pendingTotal
    : auds.some((a) => typeof a.pending === 'number') ? auds.reduce((t, a) => t + (a.pending || 0), 0) : undefined;
  pt.textContent = fmtNum(pending);
  pt.dataset.value = String(pending ?? '');
  $('backlog-age').textContent = s.backlogAgeSecs ? duration(s.backlogAgeSecs) : '—';
  const dl = $('dl-total');
  dl.textContent = typeof s.deadLettersTotal === 'number' ? fmtNum(s.deadLettersTotal) : '—';
  const navCount = $('nav-dl-count');
  navCount.textContent = s.deadLettersTotal ? fmtNum(s.deadLettersTotal) : '';
  show(navCount, !!s.deadLettersTotal);

  const lu = $('last-upload');
  lu.replaceChildren(timeEl(s.lastUploadMs));
  lu.dataset.value = String(s.lastUploadMs ?? '');
  $('next-upload').replaceChildren(paused ? document.createTextNode('paused — press Resume uploads')
    : waiting ? document.createTextNode('after you log in') : timeEl(s.nextUploadMs));

  const le = $('last-error-line');
  show(le, !!s.lastError);
  le.replaceChildren(...(s.lastError ? ['Last error: ', ...agentText(s.lastError)] : []));

  renderSparkline(s.uploadsByHour);

  const tbody = $('status-audiences');
  const rows = Object.entries(s.audiences || {}).sort(([a], [b]) => a.localeCompare(b));
  tbody.replaceChildren(...rows.map(([key, a]) => {
    if (!(key in failedSeen)) failedSeen[key] = a.failed || 0;
    const parts = [];
    if (a.lastError) {
      parts.push(el('div', { class: 'error-text' }, ...agentText(a.lastError), a.backoffUntilMs ? ` (retrying ${relTime(a.backoffUntilMs)})` : ''));
    }
    const failed = a.failed || 0;
    if (failed > 0) {
      const fresh = failed > failedSeen[key];
      const n = fresh ? failed - failedSeen[key] : failed;
      parts.push(el('div', { class: fresh ? 'error-text' : 'muted small', dataTestid: 'audience-rejected' },
        `${fmtNum(n)} record${n === 1 ? '' : 's'} rejected by Amazon${fresh ? '' : ' since the agent started'} — `,
        el('a', { href: `#/dead-letters?audience=${encodeURIComponent(key)}` }, 'see Dead letters')));
    }
    const meta = audMeta[key];
    const warn = meta && regionMismatch(key, meta.countryCode, s.region);
    return el('tr', { dataTestid: 'audience-row', dataKey: key },
      el('th', { scope: 'row', dataLabel: 'Audience' }, key),
      el('td', { class: 'num', dataCol: 'pending', dataLabel: 'Pending' }, fmtNum(a.pending)),
      el('td', { class: 'num', dataCol: 'uploaded', dataLabel: 'Uploaded' }, fmtNum(a.uploaded)),
      el('td', { class: 'num', dataCol: 'failed', dataLabel: 'Failed' }, fmtNum(a.failed)),
      el('td', { dataLabel: 'Last upload' }, timeEl(a.lastUploadMs)),
      el('td', { dataLabel: 'Last error' }, ...(parts.length ? parts : ['—'])),
      el('td', { dataLabel: 'Region', dataCol: 'region' }, meta ? (meta.region || 'not created yet') : '—',
        warn ? el('div', { class: 'warn-text small', dataTestid: 'region-warning' }, warn) : null),
      el('td', { class: 'mono', dataLabel: 'Amazon audienceId', dataCol: 'audience-id' }, a.audienceId || 'not created yet'));
  }));
  show($('status-audiences-empty'), rows.length === 0);

  const re = s.recentErrors || [];
  $('recent-errors').replaceChildren(...re.slice(-20).reverse().map((e) =>
    el('li', null, timeEl(e.atMs), ' ', e.audience ? el('strong', null, e.audience) : null, e.audience ? ': ' : '', e.message)));
  show($('recent-errors-empty'), re.length === 0);

  $('version').textContent = s.version ? `AMC Sync ${s.version}` : '';
  if (s.listen) $('s-listen').textContent = s.listen;
  if (s.writeKeyHint) $('s-wk-hint').textContent = s.writeKeyHint;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c);
  return e;
}

function renderSparkline(hours) {
  const box = $('sparkline');
  if (!Array.isArray(hours) || hours.length === 0) {
    box.replaceChildren(el('span', { class: 'muted' }, 'No upload history yet.'));
    return;
  }
  const W = 240;
  const H = 40;
  const n = hours.length;
  const bw = W / n;
  const max = Math.max(1, ...hours.map((h) => h.records || 0));
  const total = hours.reduce((t, h) => t + (h.records || 0), 0);
  const label = `${fmtNum(total)} records sent to Amazon (accepted + rejected), last ${n === 24 ? '24' : n} hours`;
  const bars = hours.map((h, i) => {
    const r = h.records || 0;
    const bh = r ? Math.max(2, (r / max) * (H - 2)) : 1;
    const when = new Date(h.hourMs);
    return svg('rect', {
      x: (i * bw + 1).toFixed(1), y: (H - bh).toFixed(1), width: Math.max(1, bw - 2).toFixed(1), height: bh.toFixed(1),
      class: r ? 'bar' : 'bar empty',
    }, svg('title', null, `${when.toLocaleString([], { hour: '2-digit', minute: '2-digit', day: 'numeric', month: 'short' })}: ${fmtNum(r)} records`));
  });
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': label, class: 'spark', 'data-testid': 'upload-sparkline' },
    svg('title', null, label), ...bars);
  box.replaceChildren(chart, el('div', { class: 'muted small' }, label));
}

async function statusAction(btn, method, path, doneText, errText) {
  const msg = $('status-action-msg');
  btn.disabled = true;
  setMsg(msg, 'Working…');
  try {
    const r = await api(method, path);
    setMsg(msg, doneText(r));
    if (r && r.status && typeof r.status === 'object') onStatus({ ...(lastStatus || {}), ...r.status });
  } catch (e) {
    setMsg(msg, errorNodes(e, errText), true);
  } finally {
    btn.disabled = false;
    if (lastStatus) renderStatus(lastStatus);
    pollNow();
  }
}

// Agent status text like "rate_limited: Amazon answered 429" → the words, the code smaller.
function agentText(text) {
  const m = /^([a-z][a-z0-9_]+):\s*(.+)$/s.exec(String(text));
  if (!m) return [String(text)];
  return [m[2], ' ', el('small', { class: 'err-code' }, m[1])];
}

// Per-audience `failed` as first seen by this page: a rise is shown as a fresh rejection.
const failedSeen = {};

// ---- Upload now: report the round's result once a status shows it done.
let uploadBusy = false;
let uploadWatch = null;

function uploadSnapshot(s) {
  const auds = {};
  for (const [k, a] of Object.entries((s && s.audiences) || {})) auds[k] = { uploaded: a.uploaded || 0, failed: a.failed || 0 };
  return { lastUploadMs: s ? s.lastUploadMs ?? null : null, auds };
}

function uploadDelta(before, s) {
  let sent = 0;
  let rejected = 0;
  for (const [k, a] of Object.entries((s && s.audiences) || {})) {
    const b = before.auds[k] || { uploaded: 0, failed: 0 };
    sent += Math.max(0, (a.uploaded || 0) - b.uploaded);
    rejected += Math.max(0, (a.failed || 0) - b.failed);
  }
  return { sent, rejected };
}

function showUploadResult(w, s) {
  const { sent, rejected } = uploadDelta(w.before, s);
  const key = `${sent}/${rejected}`;
  if (key === w.shown) return;
  w.shown = key;
  const msg = $('status-action-msg');
  if (sent === 0 && rejected === 0) {
    setMsg(msg, 'Upload finished: nothing was waiting to be sent.');
    return;
  }
  const parts = [`Upload finished: ${fmtNum(sent)} sent, ${fmtNum(rejected)} rejected by Amazon`];
  if (rejected > 0) parts.push(' — see ', el('a', { href: '#/dead-letters', dataTestid: 'upload-result-dead-letters' }, 'Dead letters'));
  else parts.push('.');
  setMsg(msg, parts, false, true);
  msg.dataset.sent = String(sent);
  msg.dataset.rejected = String(rejected);
}

// Called with every status: finishes a pending "Upload started" once the round shows done,
// then keeps the numbers current for a minute (Amazon reports rejections after the upload).
function watchUpload(s) {
  const w = uploadWatch;
  if (!w || !s) return;
  if (Date.now() > w.until) {
    uploadWatch = null;
    return;
  }
  const d = uploadDelta(w.before, s);
  const roundDone = w.done || (s.lastUploadMs ?? null) !== w.before.lastUploadMs || d.sent > 0 || d.rejected > 0;
  if (!roundDone) return;
  w.done = true;
  showUploadResult(w, s);
}

async function uploadNow() {
  const btn = $('btn-upload');
  const msg = $('status-action-msg');
  const before = uploadSnapshot(lastStatus);
  uploadWatch = null;
  uploadBusy = true;
  btn.disabled = true;
  setMsg(msg, 'Uploading…');
  try {
    // Waits (up to 15 s) for the round and its Amazon jobs; a longer round is followed by polling.
    const r = await api('POST', '/api/flush?wait=true&timeout=15');
    const w = { before, until: Date.now() + 60000, done: false, shown: '' };
    uploadWatch = w;
    if (r && r.status && typeof r.status === 'object') {
      if (r.openJobs === 0) w.done = true;
      onStatus({ ...(lastStatus || {}), ...r.status });
    }
    if (!w.done) {
      w.until = Date.now() + 180000;
      setMsg(msg, 'Upload started — waiting for Amazon to confirm…');
    }
  } catch (e) {
    setMsg(msg, errorNodes(e, { conflict: 'Uploads are paused — press Resume uploads first.' }), true);
  } finally {
    uploadBusy = false;
    if (lastStatus) renderStatus(lastStatus);
    else btn.disabled = false;
    pollNow();
  }
}

// ---- Audience details the status lacks (region, country), for the Status table.
let audMeta = {};
let audMetaInflight = false;

function setAudMeta(list) {
  audMeta = {};
  for (const a of list) audMeta[a.key] = { region: a.region ?? null, countryCode: a.countryCode };
}

async function loadAudienceMeta() {
  if (audMetaInflight) return;
  audMetaInflight = true;
  try {
    const r = await api('GET', '/api/audiences');
    setAudMeta(r.audiences || []);
    if (lastStatus && currentView === 'status') renderStatus(lastStatus);
  } catch (_) {
    /* the Status table just lacks the region */
  } finally {
    audMetaInflight = false;
  }
}

// ---------------------------------------------------------------- audiences

async function loadAudiences() {
  try {
    const r = await api('GET', '/api/audiences');
    showError($('aud-error'), null);
    setAudMeta(r.audiences || []);
    renderAudiences(r.audiences || []);
  } catch (e) {
    if (e.status !== 401) showError($('aud-error'), e);
  }
}

function renderAudiences(list) {
  const rows = list.map((a) => {
    const target = a.advertiserId ? `DSP advertiser ${a.advertiserId}` : a.connectionId ? `AMC connection ${a.connectionId}` : '—';
    const fee = a.cpmCents != null && a.currency ? `${(a.cpmCents / 100).toFixed(2)} ${a.currency} CPM` : '—';
    const active = lastStatus && lastStatus.region;
    const warn = regionMismatch(a.key, a.countryCode, active);
    return el('tr', { dataTestid: 'audience-list-row', dataKey: a.key },
      el('th', { scope: 'row' }, a.key, a.description ? el('div', { class: 'muted small' }, a.description) : null),
      el('td', { class: 'mono' }, a.audienceId || 'not created yet'),
      el('td', { dataCol: 'region' }, a.region || 'not created yet',
        warn ? el('div', { class: 'warn-text small', dataTestid: 'region-warning' }, warn) : null),
      el('td', null, target),
      el('td', null, a.countryCode || '—'),
      el('td', null, a.ttlSecs != null ? duration(a.ttlSecs) : 'Amazon default'),
      el('td', null, fee),
      el('td', { class: 'num' }, fmtNum(a.pending)),
      el('td', { class: 'num' }, fmtNum(a.uploaded)),
      el('td', { class: 'num' }, fmtNum(a.failed)),
      el('td', null, timeEl(a.createdAtMs)));
  });
  $('aud-rows').replaceChildren(...rows);
  show($('aud-empty'), rows.length === 0);
}

function clearFieldErrors(form) {
  for (const n of form.querySelectorAll('[data-error-for]')) n.textContent = '';
  for (const n of form.querySelectorAll('[aria-invalid]')) n.removeAttribute('aria-invalid');
}

// Maps API field names (camelCase or the store's snake_case) to form fields.
const FIELD_ALIASES = {
  country_code: 'countryCode', advertiser_id: 'advertiserId', connection_id: 'connectionId',
  ttl_secs: 'ttlSecs', cpm_cents: 'cpmCents', drop_dir: 'dropDir', schedule_interval_secs: 'scheduleIntervalSecs',
  external_audience_id: 'key',
};

function fieldError(form, field, text) {
  const name = FIELD_ALIASES[field] || field;
  const slot = form.querySelector(`[data-error-for="${name}"]`);
  if (!slot) return false;
  slot.textContent = text;
  const input = form.elements[name];
  if (input) {
    input.setAttribute('aria-invalid', 'true');
  }
  return true;
}

function validateAudience(v) {
  const errs = [];
  if (!/^[0-9A-Za-z_.:-]{1,128}$/.test(v.key)) errs.push(['key', 'Use 1–128 letters, digits, _ - . or :']);
  if (!/^[A-Za-z]{2}$/.test(v.countryCode)) errs.push(['countryCode', 'Two letters, e.g. US']);
  if (v.advertiserId && v.connectionId) {
    errs.push(['advertiserId', 'Give an advertiser id or a connection id, not both']);
  } else if (!v.advertiserId && !v.connectionId) {
    errs.push(['advertiserId', 'Give the DSP advertiser id (digits) or the AMC connection id']);
  } else if (v.advertiserId && !/^[0-9]+$/.test(v.advertiserId)) {
    errs.push(['advertiserId', 'Digits only (0–9): an advertiser id has no letters or other characters']);
  } else if (v.advertiserId && (!/^[0-9]{1,39}$/.test(v.advertiserId) || /^0+$/.test(v.advertiserId))) {
    errs.push(['advertiserId', 'A positive number of 1–39 digits']);
  } else if (v.connectionId && (v.connectionId.length > 256 || /[\u0000-\u001f\u007f]/.test(v.connectionId))) {
    errs.push(['connectionId', '1–256 printable characters']);
  }
  if (v.description.length > 1000) errs.push(['description', 'At most 1,000 characters']);
  if (v.ttlSecs !== '') {
    if (!/^[0-9]+$/.test(v.ttlSecs) || Number(v.ttlSecs) > MAX_TTL_SECS) errs.push(['ttlSecs', 'A whole number of seconds from 0 to 34,300,800']);
  }
  if (v.cpmCents !== '' && !/^[0-9]+$/.test(v.cpmCents)) errs.push(['cpmCents', 'A whole number of cents']);
  if ((v.cpmCents !== '') !== (v.currency !== '')) {
    errs.push([v.cpmCents === '' ? 'cpmCents' : 'currency', 'A fee needs both the CPM and the currency']);
  } else if (v.currency && !CURRENCIES.includes(v.currency)) {
    errs.push(['currency', `One of ${CURRENCIES.join(' ')}`]);
  }
  return errs;
}

async function createAudience(ev) {
  ev.preventDefault();
  const form = $('aud-form');
  clearFieldErrors(form);
  showError($('aud-form-error'), null);
  setMsg($('aud-form-msg'), '');
  const get = (n) => form.elements[n].value.trim();
  const v = {
    key: get('key'), countryCode: get('countryCode').toUpperCase(), advertiserId: get('advertiserId'),
    connectionId: get('connectionId'), description: form.elements.description.value, ttlSecs: get('ttlSecs'),
    cpmCents: get('cpmCents'), currency: form.elements.currency.value,
  };
  const errs = validateAudience(v);
  if (errs.length) {
    for (const [f, t] of errs) fieldError(form, f, t);
    const first = form.elements[errs[0][0]];
    if (first) first.focus();
    setMsg($('aud-form-msg'), `Please fix ${errs.length === 1 ? 'the highlighted field' : `${errs.length} fields`}.`, true);
    return;
  }
  const body = { key: v.key, countryCode: v.countryCode };
  if (v.description) body.description = v.description;
  if (v.advertiserId) body.advertiserId = v.advertiserId; // digits as a string: never through a JS number
  if (v.connectionId) body.connectionId = v.connectionId;
  if (v.ttlSecs !== '') body.ttlSecs = Number(v.ttlSecs);
  if (v.cpmCents !== '') body.cpmCents = Number(v.cpmCents);
  if (v.currency) body.currency = v.currency;
  const btn = $('aud-create');
  btn.disabled = true;
  try {
    const a = await api('POST', '/api/audiences', body);
    setMsg($('aud-form-msg'), `Audience ${a && a.key ? a.key : v.key} created.`);
    form.reset();
    loadAudiences();
    pollNow();
  } catch (e) {
    if (e.status === 401) return;
    let placed = e.field && fieldError(form, e.field, e.message);
    if (e.code === 'conflict') {
      placed = fieldError(form, 'key', `An audience named '${v.key}' already exists — pick another key.`);
      form.elements.key.focus();
    }
    if (!placed) showError($('aud-form-error'), e);
    setMsg($('aud-form-msg'), 'Not created.', true);
  } finally {
    btn.disabled = false;
  }
}

// ---------------------------------------------------------------- dead letters

let dlItems = [];

function explain(reason) {
  return REASONS[reason] ? REASONS[reason].text : 'No explanation is known for this code; the message next to it says what happened.';
}

// Whether Retry can help, in words matching the explanation.
function retryAdvice(reason) {
  const r = REASONS[reason];
  return r && r.retry === false ? ' Retry cannot fix it: correct the data at the source and send it again.' : '';
}

// Amazon's message in plain words, its code in small text. Amazon's texts look like
// "INVALID_ARGUMENT: externalUserId …" or carry a "code" in JSON; field names are put in words.
const AMAZON_FIELDS = [
  [/\bexternalUserId\b/g, 'user id'], [/\bhashedEmail\b|\bemail\b/g, 'email'], [/\bhashedPhone\b|\bphone\b/g, 'phone'],
  [/\bhashedFirstName\b|\bfirstName\b/g, 'first name'], [/\bhashedLastName\b|\blastName\b/g, 'last name'],
  [/\bhashedPostcode\b|\bpostalCode\b|\bpostcode\b/g, 'postcode'], [/\bcountryCode\b/g, 'country'],
];
function messageNodes(d) {
  const raw = String(d.message || '');
  if (!raw) return ['—'];
  if (!String(d.reason || '').startsWith('amazon_')) return [raw];
  let code = '';
  let text = raw;
  // "Amazon rejected the record: INVALID_RECORD: <Amazon's text>" → the text, the code smaller.
  let m = /^\s*\{[\s\S]*\}\s*$/.test(raw) ? null : /^[\s\S]*?\b([A-Z][A-Z0-9_]{2,})\s*[:\-–]\s*([\s\S]+)$/.exec(raw);
  if (m) {
    code = m[1];
    text = m[2];
  } else {
    try {
      const j = JSON.parse(raw);
      code = j.code || j.errorCode || '';
      text = j.message || j.errorMessage || j.details || raw;
    } catch (_) {
      m = /^([\s\S]*?)\s*[([]\s*(?:code\s*)?([A-Z][A-Z0-9_]{2,})\s*[)\]]\s*$/.exec(raw);
      if (m) {
        text = m[1];
        code = m[2];
      }
    }
  }
  for (const [re, words] of AMAZON_FIELDS) text = text.replace(re, words);
  text = text.trim();
  text = `Amazon said: ${text.charAt(0).toUpperCase()}${text.slice(1)}`;
  return code ? [text, ' ', el('small', { class: 'err-code' }, code)] : [text];
}

const NOT_KNOWN = 'not known (rejected before mapping)';

async function loadDeadLetters() {
  const reason = $('dl-reason').value;
  const q = new URLSearchParams({ limit: '100' });
  if (reason) q.set('reason', reason);
  if (dlAudience) q.set('audience', dlAudience);
  try {
    const r = await api('GET', `/api/dead-letters?${q}`);
    showError($('dl-error'), null);
    renderDeadLetters(r || {});
  } catch (e) {
    if (e.status !== 401) showError($('dl-error'), e);
  }
}

function reasonHead(code) {
  return [el('span', { class: 'reason-title' }, reasonTitle(code)), ' ', el('code', { class: 'reason small' }, code)];
}

function renderDeadLetters(r) {
  const showRetried = $('dl-show-retried').checked;
  const all = r.items || [];
  dlItems = showRetried ? all : all.filter((d) => !d.retried);
  // The API counts not-yet-retried dead letters of every audience; within an audience filter
  // count what was loaded, so the numbers match the rows.
  let counts = r.counts || {};
  if (dlAudience) {
    counts = {};
    for (const d of all) if (!d.retried) counts[d.reason] = (counts[d.reason] || 0) + 1;
  }
  // Reason filter: every reason with a count, plus the selected one.
  const sel = $('dl-reason');
  const cur = sel.value;
  const reasons = new Set(Object.keys(counts));
  if (cur) reasons.add(cur);
  const opts = [el('option', { value: '' }, `All reasons (${fmtNum(Object.values(counts).reduce((a, b) => a + b, 0))})`)];
  for (const k of [...reasons].sort((x, y) => reasonTitle(x).localeCompare(reasonTitle(y)))) {
    opts.push(el('option', { value: k }, `${reasonTitle(k)} — ${k} (${fmtNum(counts[k] || 0)})`));
  }
  sel.replaceChildren(...opts);
  sel.value = cur;

  const af = $('dl-audience-filter');
  show(af, !!dlAudience);
  af.replaceChildren(...(dlAudience ? ['Audience: ', el('strong', null, dlAudience), ' · ', el('a', { href: '#/dead-letters' }, 'show all audiences')] : []));

  const ex = $('dl-explain');
  show(ex, !!cur);
  ex.replaceChildren(...(cur ? [el('strong', null, reasonTitle(cur)), ' ', el('code', { class: 'small' }, cur), `: ${explain(cur)}${retryAdvice(cur)}`] : []));
  $('dl-retry-reason').disabled = !cur;
  $('dl-retry-reason').textContent = cur ? `Retry all “${reasonTitle(cur)}”` : 'Retry all with this reason';

  // Narrow windows: each reason's explanation once, above the list (rows show only the headline).
  const shownReasons = [...new Set(dlItems.map((d) => d.reason))].sort();
  const rex = $('dl-reasons-explain');
  show(rex, !cur && shownReasons.length > 0);
  rex.replaceChildren(...shownReasons.map((k) => el('p', null, el('strong', null, reasonTitle(k)), ' ', el('code', { class: 'small' }, k), `: ${explain(k)}${retryAdvice(k)}`)));

  const rows = dlItems.map((d) => {
    const cb = el('input', { type: 'checkbox', class: 'dl-pick', value: String(d.id), 'aria-label': `Select dead letter ${d.id}`, disabled: d.retried, dataReason: d.reason });
    return el('tr', { dataTestid: 'dead-letter-row', dataId: String(d.id), dataReason: d.reason, class: d.retried ? 'retried' : '' },
      el('td', { class: 'pick' }, cb),
      el('td', { class: 'nowrap', dataLabel: 'When' }, timeEl(d.atMs)),
      el('td', { dataLabel: 'Reason' }, ...reasonHead(d.reason), el('div', { class: 'small reason-text row-explain', dataTestid: 'reason-explanation' }, explain(d.reason))),
      el('td', { dataLabel: 'What happened' }, ...messageNodes(d), d.retried ? el('div', { class: 'muted small' }, 'retry requested') : null),
      el('td', { dataLabel: 'Audience' }, d.audience || el('span', { class: 'muted' }, NOT_KNOWN)),
      el('td', { class: d.externalUserId ? 'mono' : '', dataLabel: 'User id' }, d.externalUserId || el('span', { class: 'muted' }, NOT_KNOWN)),
      el('td', { dataLabel: 'Source' }, SOURCES[d.source] || d.source || '—'));
  });
  $('dl-rows').replaceChildren(...rows);
  show($('dl-empty'), rows.length === 0);
  const hiddenRetried = all.length - dlItems.length;
  $('dl-empty').textContent = hiddenRetried > 0 ? `No dead letters waiting (${fmtNum(hiddenRetried)} already retried: tick “Show retried” to see them).` : 'No dead letters.';
  const shown = $('dl-shown');
  show(shown, all.length >= 100);
  shown.textContent = all.length >= 100 ? `Showing the newest ${fmtNum(all.length)}; filter by reason to see others.` : '';
  $('dl-all').checked = false;
  updateRetrySelected();

  const present = Object.keys(counts).length ? Object.keys(counts).sort() : Object.keys(REASONS).sort();
  $('dl-glossary-list').replaceChildren(...present.flatMap((k) => [el('dt', null, ...reasonHead(k)), el('dd', null, explain(k) + retryAdvice(k))]));
}

function pickedIds() {
  return [...document.querySelectorAll('.dl-pick:checked')].map((c) => Number(c.value));
}

function updateRetrySelected() {
  const n = pickedIds().length;
  const b = $('dl-retry-selected');
  b.disabled = n === 0;
  b.textContent = n ? `Retry selected (${n})` : 'Retry selected';
}

function retrySummary(r) {
  if (!r) return 'Done.';
  const parts = [`${fmtNum(r.requeued || 0)} re-queued`];
  const skipped = (r.skipped || 0) + (r.notRetryable || 0);
  if (skipped) parts.push(`${fmtNum(skipped)} cannot be retried (input errors: send them again, corrected)`);
  if (r.stale) parts.push(`${fmtNum(r.stale)} already superseded by newer changes`);
  return parts.join(', ') + '.';
}

async function retry(body, btn) {
  btn.disabled = true;
  setMsg($('dl-msg'), 'Retrying…');
  try {
    const r = await api('POST', '/api/dead-letters/retry', body);
    setMsg($('dl-msg'), retrySummary(r));
  } catch (e) {
    setMsg($('dl-msg'), e, true);
  } finally {
    btn.disabled = false;
    loadDeadLetters();
    pollNow();
  }
}

// ---------------------------------------------------------------- connection

let connection = null;
let loginPoll = null;

async function loadConnection() {
  try {
    const c = await api('GET', '/api/connection');
    showError($('conn-error'), null);
    renderConnection(c);
  } catch (e) {
    if (e.status !== 401) showError($('conn-error'), e);
  }
}

function renderConnection(c) {
  connection = c;
  const st = c.state || 'unknown';
  const b = $('conn-state');
  b.textContent = AUTH_LABEL[st] || st;
  b.className = `badge state-${st}`;
  b.dataset.state = st;
  $('conn-help').textContent = connHelp(c);
  const li = Array.isArray(c.loggedInRegions) ? c.loggedInRegions : [];
  $('conn-since').textContent = `Active region: ${regionName(c.region)} · Logged in for: ${li.length ? li.map(regionName).join(', ') : 'no region yet'}${c.loggedInAtMs ? ` · last login ${new Date(c.loggedInAtMs).toLocaleString()}` : ''}`;
  $('conn-store').textContent = c.secretStore ? `Your Amazon secrets are kept in ${({ keychain: 'your system keychain', file: 'a private file only you can read', environment: 'environment variables' })[c.secretStore] || c.secretStore}.` : '';
  const w = $('conn-store-warning');
  show(w, !!c.secretStoreWarning);
  $('conn-store-warning-text').textContent = storeWarningText(c.secretStoreWarning);
  $('conn-store-warning-raw').textContent = c.secretStoreWarning || '';
  if (c.region && document.activeElement !== $('region-select')) $('region-select').value = c.region;
  $('redirect-uri').textContent = c.redirectUri || `${location.origin}/api/login/callback`;

  const hasClient = !!c.clientId;
  show($('client-id-line'), hasClient);
  $('client-id').textContent = c.clientId || '';
  const other = $('client-other');
  show(other, hasClient);
  // Without a stored client id the fields are required; with one they are optional (details toggle).
  show($('client-fields'), !hasClient || other.open);
  $('logout-button').disabled = st === 'no_credentials' && !hasClient;

  const profiles = c.profiles || [];
  $('profiles-caption').textContent = `Profiles found in ${regionName(c.region)}`;
  $('profile-rows').replaceChildren(...profiles.map((p) => el('tr', { dataTestid: 'profile-row', dataProfileId: String(p.profileId) },
    el('td', { class: 'mono' }, String(p.profileId)), el('td', null, c.region || '—'), el('td', null, p.name || '—'), el('td', null, p.type || '—'),
    el('td', null, p.countryCode || '—'), el('td', null, p.currencyCode || '—'))));
  show($('profiles-empty'), profiles.length === 0);
}

// "You haven't logged in for EU yet…" when the active region never had a login; else the state's text.
function connHelp(c) {
  const st = c.state || 'unknown';
  const li = Array.isArray(c.loggedInRegions) ? c.loggedInRegions : [];
  if (st === 'needs_login' && c.region && !li.includes(c.region)) return notLoggedInText(c.region, li);
  return CONN_HELP[st] || '';
}

function notLoggedInText(region, loggedIn) {
  const others = loggedIn.filter((r) => r !== region);
  return `You haven't logged in for ${region} yet. Log in with Amazon for ${region} below${others.length ? ` (your ${others.join(' and ')} login is kept)` : ''}.`;
}

function storeWarningText(raw) {
  if (!raw) return '';
  if (/keychain/i.test(raw)) {
    const m = /kept in (.+?) \(mode 0600\)/.exec(raw);
    return `Your system keychain isn't available, so your Amazon secrets are stored in a private file only you can read (${m ? m[1] : 'in the AMC Sync data folder'}).`;
  }
  return 'There is a problem with where your Amazon secrets are stored; see the technical details.';
}

async function startLogin(ev) {
  ev.preventDefault();
  const msg = $('login-msg');
  const btn = $('login-button');
  const body = { region: $('region-select').value };
  const fieldsShown = !$('client-fields').hidden;
  const id = $('client-id-input').value.trim();
  const secret = $('client-secret-input').value.trim();
  if (fieldsShown && (id || secret || !(connection && connection.clientId))) {
    if (!id || !secret) {
      setMsg(msg, 'Enter both the client id and the client secret of your Login with Amazon security profile.', true);
      (id ? $('client-secret-input') : $('client-id-input')).focus();
      return;
    }
    body.clientId = id;
    body.clientSecret = secret;
  }
  btn.disabled = true;
  setMsg(msg, 'Starting login…');
  show($('login-link-line'), false);
  // Open the window synchronously (within the click) so popup blockers allow it, then point it at Amazon.
  let win = null;
  try {
    win = window.open('', 'amc-sync-login');
  } catch (_) {
    win = null;
  }
  let start;
  try {
    start = await api('POST', '/api/login/start', body);
  } catch (e) {
    if (win) win.close();
    setMsg(msg, e, true);
    btn.disabled = false;
    return;
  }
  $('client-secret-input').value = '';
  const link = $('login-link');
  link.href = start.authorizeUrl;
  show($('login-link-line'), true);
  if (win) {
    try {
      win.opener = null;
      win.location.href = start.authorizeUrl;
    } catch (_) {
      /* the link above still works */
    }
  }
  setMsg(msg, 'Waiting for you to approve at Amazon…');
  pollLogin(start.state, Date.now() + (start.expiresInSecs || 300) * 1000, btn);
}

function pollLogin(state, deadline, btn) {
  clearTimeout(loginPoll);
  const msg = $('login-msg');
  const tick = async () => {
    if (Date.now() > deadline) {
      setMsg(msg, 'The login expired before Amazon answered. Try again.', true);
      btn.disabled = false;
      return;
    }
    try {
      const r = await api('GET', `/api/login/status?state=${encodeURIComponent(state)}`);
      if (r.state === 'ok') {
        const n = Array.isArray(r.profiles) ? r.profiles.length : null;
        setMsg(msg, `Logged in${n !== null ? `: ${n} advertising profile${n === 1 ? '' : 's'}` : ''}.`);
        show($('login-link-line'), false);
        btn.disabled = false;
        loadConnection();
        pollNow();
        return;
      }
      if (r.state === 'error') {
        const words = (r.code && ERROR_TEXT[r.code]) || r.message || 'Amazon refused the login.';
        setMsg(msg, [`Login failed: ${words}`, ...(r.code ? [' ', el('small', { class: 'err-code', title: r.message || '' }, r.code)] : [])], true);
        btn.disabled = false;
        loadConnection();
        return;
      }
    } catch (e) {
      if (e.status === 401) return;
      setMsg(msg, e, true);
      if (e.status && e.status >= 400 && e.status < 500) {
        btn.disabled = false;
        return;
      }
    }
    loginPoll = setTimeout(tick, 1500);
  };
  loginPoll = setTimeout(tick, 1000);
}

async function logout() {
  const ok = await confirmAction('Log out of Amazon Ads?', 'The client secret and refresh tokens are removed from this computer. Uploads stop until you log in again; everything queued is kept.', 'Log out');
  if (!ok) return;
  const btn = $('logout-button');
  btn.disabled = true;
  try {
    await api('POST', '/api/logout');
    setMsg($('login-msg'), 'Logged out. Uploads wait until you log in again.');
  } catch (e) {
    setMsg($('login-msg'), e, true);
  } finally {
    btn.disabled = false;
    loadConnection();
    pollNow();
  }
}

async function switchRegion(ev) {
  ev.preventDefault();
  const region = $('region-select').value;
  const msg = $('region-msg');
  if (connection && connection.region === region) {
    setMsg(msg, `Already on ${region}.`);
    return;
  }
  const from = connection && connection.region;
  const li = (connection && Array.isArray(connection.loggedInRegions)) ? connection.loggedInRegions : [];
  const text = [`Switch to ${region}? Your audiences will be created again in ${region} on their next upload.`];
  if (from) text.push(`People already uploaded in ${from} are not copied over.`);
  if (!li.includes(region)) text.push(`You need to log in once for ${region}${from && li.includes(from) ? `; your ${from} login is kept` : ''}.`);
  else if (from && li.includes(from)) text.push(`Your ${from} login is kept.`);
  const ok = await confirmAction(`Switch to ${regionName(region)}?`, text.join(' '), `Switch to ${region}`);
  if (!ok) {
    if (from) $('region-select').value = from;
    return;
  }
  $('region-apply').disabled = true;
  setMsg(msg, 'Switching…');
  try {
    const c = await api('PUT', '/api/region', { region });
    if (c && c.state) renderConnection(c);
    else loadConnection();
    const now = (c && c.region) || region;
    const cli = (c && Array.isArray(c.loggedInRegions)) ? c.loggedInRegions : [];
    let extra = '';
    if (c && c.state === 'needs_login') extra = ` ${cli.includes(now) ? CONN_HELP.needs_login : notLoggedInText(now, cli)}`;
    setMsg(msg, `Region is now ${now}.${extra}`, false, !!extra);
  } catch (e) {
    setMsg(msg, e, true);
    if (connection && connection.region) $('region-select').value = connection.region;
  } finally {
    $('region-apply').disabled = false;
    pollNow();
  }
}

// ---------------------------------------------------------------- settings

let loadedSettings = null;

async function loadSettings() {
  try {
    const s = await api('GET', '/api/settings');
    showError($('set-error'), null);
    loadedSettings = s;
    const f = $('settings-form');
    if (!f.contains(document.activeElement)) {
      f.elements.dropDir.value = s.dropDir || '';
      f.elements.scheduleIntervalSecs.value = s.scheduleIntervalSecs ?? '';
      f.elements.profile.value = s.profile || 'amazon';
    }
    f.elements.dropDir.placeholder = s.dropDir ? '' : 'no drop folder is watched';
    $('s-batch').textContent = fmtNum(s.batchSize);
    if (s.writeKeyHint) $('s-wk-hint').textContent = s.writeKeyHint;
  } catch (e) {
    if (e.status !== 401) showError($('set-error'), e);
  }
}

async function saveSettings(ev) {
  ev.preventDefault();
  const f = $('settings-form');
  clearFieldErrors(f);
  const msg = $('settings-msg');
  const interval = f.elements.scheduleIntervalSecs.value.trim();
  const dropDir = f.elements.dropDir.value.trim();
  const profile = f.elements.profile.value;
  if (!/^[0-9]+$/.test(interval) || Number(interval) < 60 || Number(interval) > 86400) {
    fieldError(f, 'scheduleIntervalSecs', 'A whole number of seconds from 60 to 86,400');
    f.elements.scheduleIntervalSecs.focus();
    setMsg(msg, 'Please fix the highlighted field.', true);
    return;
  }
  // Send only what changed (an empty drop folder field means "leave it as it is").
  const was = loadedSettings || {};
  const body = {};
  if (dropDir && dropDir !== (was.dropDir || '')) body.dropDir = dropDir;
  if (Number(interval) !== was.scheduleIntervalSecs) body.scheduleIntervalSecs = Number(interval);
  if (profile !== was.profile) body.profile = profile;
  if (Object.keys(body).length === 0) {
    setMsg(msg, 'Nothing changed.');
    return;
  }
  $('settings-save').disabled = true;
  try {
    await api('PUT', '/api/settings', body);
    const later = body.dropDir !== undefined || body.profile !== undefined;
    setMsg(msg, `Saved.${body.scheduleIntervalSecs !== undefined ? ' The new schedule applies now.' : ''}${later ? ' The drop folder and profile apply at the next start of the agent.' : ''}`);
    loadSettings();
  } catch (e) {
    if (!(e.field && fieldError(f, e.field, e.message))) setMsg(msg, e, true);
    else setMsg(msg, 'Not saved.', true);
  } finally {
    $('settings-save').disabled = false;
  }
}

async function rotateWriteKey() {
  const ok = await confirmAction('Rotate the Segment write key?', 'The current write key stops working at once. Every Segment source, SDK and script that sends to AMC Sync must be updated with the new key.', 'Rotate key');
  if (!ok) return;
  const btn = $('wk-rotate');
  btn.disabled = true;
  try {
    const r = await api('POST', '/api/settings/write-key/rotate');
    $('wk-new-value').textContent = r.writeKey;
    show($('wk-new'), true);
    setMsg($('wk-msg'), 'Write key rotated.');
    loadSettings();
    pollNow();
  } catch (e) {
    setMsg($('wk-msg'), e, true);
  } finally {
    btn.disabled = false;
  }
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('btn-upload').addEventListener('click', uploadNow);
  $('btn-pause').addEventListener('click', (e) => statusAction(e.currentTarget, 'POST', '/api/pause',
    () => 'Uploads paused. Events are still received and queued.'));
  $('btn-resume').addEventListener('click', (e) => statusAction(e.currentTarget, 'POST', '/api/resume', () => 'Uploads resumed.'));

  const cur = $('f-currency');
  cur.replaceChildren(el('option', { value: '' }, 'none'), ...CURRENCIES.map((c) => el('option', { value: c }, c)));
  $('aud-form').addEventListener('submit', createAudience);
  $('aud-refresh').addEventListener('click', loadAudiences);

  $('dl-reason').addEventListener('change', () => {
    setMsg($('dl-msg'), '');
    loadDeadLetters();
  });
  $('dl-refresh').addEventListener('click', loadDeadLetters);
  $('dl-rows').addEventListener('change', (e) => {
    if (e.target.classList.contains('dl-pick')) updateRetrySelected();
  });
  $('dl-all').addEventListener('change', (e) => {
    for (const c of document.querySelectorAll('.dl-pick:not(:disabled)')) c.checked = e.target.checked;
    updateRetrySelected();
  });
  $('dl-show-retried').addEventListener('change', loadDeadLetters);
  $('dl-retry-selected').addEventListener('click', async (e) => {
    const btn = e.currentTarget;
    const picked = [...document.querySelectorAll('.dl-pick:checked')];
    const futile = picked.filter((c) => REASONS[c.dataset.reason] && REASONS[c.dataset.reason].retry === 'futile').length;
    if (futile) {
      const ok = await confirmAction('Retry records Amazon refused?',
        `${futile === 1 ? '1 selected record was' : `${fmtNum(futile)} selected records were`} refused by Amazon. ${explain('amazon_invalid_record')} Retry anyway?`, 'Retry anyway');
      if (!ok) return;
    }
    retry({ ids: pickedIds() }, btn);
  });
  $('dl-retry-reason').addEventListener('click', async (e) => {
    const reason = $('dl-reason').value;
    if (!reason) return;
    const btn = e.currentTarget;
    const futile = REASONS[reason] && REASONS[reason].retry === 'futile';
    const ok = futile
      ? await confirmAction(`Retry every “${reasonTitle(reason)}” dead letter?`, `${explain(reason)} Retry anyway?`, 'Retry anyway')
      : await confirmAction(`Retry every “${reasonTitle(reason)}” dead letter?`, `${explain(reason)}${retryAdvice(reason)} Records that still have their hashed data go back into the queue.`, 'Retry all');
    if (ok) retry({ reason }, btn);
  });

  // Audience form: country shown upper-cased as typed; advertiser id flagged when not digits.
  $('f-country').addEventListener('input', (e) => {
    const i = e.target;
    const up = i.value.toUpperCase();
    if (up !== i.value) {
      const [a, b] = [i.selectionStart, i.selectionEnd];
      i.value = up;
      i.setSelectionRange(a, b);
    }
  });
  $('f-adv').addEventListener('input', (e) => {
    const f = $('aud-form');
    const v = e.target.value.trim();
    const slot = $('f-adv-err');
    if (v && !/^[0-9]+$/.test(v)) {
      fieldError(f, 'advertiserId', 'Digits only (0–9): an advertiser id has no letters or other characters');
    } else if (e.target.getAttribute('aria-invalid') === 'true') {
      slot.textContent = '';
      e.target.removeAttribute('aria-invalid');
    }
  });

  $('region-form').addEventListener('submit', switchRegion);
  $('login-form').addEventListener('submit', startLogin);
  $('logout-button').addEventListener('click', logout);
  $('client-other').addEventListener('toggle', () => show($('client-fields'), $('client-other').open || !(connection && connection.clientId)));

  $('settings-form').addEventListener('submit', saveSettings);
  $('wk-rotate').addEventListener('click', rotateWriteKey);
  $('wk-copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('wk-new-value').textContent);
      setMsg($('wk-msg'), 'Copied.');
    } catch (e) {
      setMsg($('wk-msg'), 'Copy failed: select the key and copy it by hand.', true);
    }
  });

  // Clicking the current view's tab reloads it (no hashchange fires then).
  $('nav').addEventListener('click', (e) => {
    const a = e.target.closest('a[data-view]');
    if (a && a.dataset.view === currentView && location.hash === `#/${currentView}`) loadView(currentView);
  });
  window.addEventListener('hashchange', () => {
    // A new #token=… (the tray re-opening the page) replaces the old token.
    if (location.hash.includes('token=')) start();
    else route(true);
  });
  document.addEventListener('visibilitychange', () => {
    if (!token) return;
    if (document.visibilityState === 'visible') {
      polling = false;
      startPolling();
    } else {
      stopPolling();
    }
  });
  // Relative times drift: re-render every 30 s without a request.
  setInterval(() => {
    if (lastStatus && currentView === 'status' && document.visibilityState === 'visible') renderStatus(lastStatus);
  }, 30000);
}

// Reads the token (fragment or sessionStorage) and shows the dashboard, or the token panel.
function start() {
  readToken();
  if (!token) {
    showTokenMissing('no-token');
    return;
  }
  show($('token-missing'), false);
  show($('nav'), true);
  lastRaw = '';
  lastSignature = '';
  if (!/^#\/?[a-z-]+(\?[^#]*)?$/.test(location.hash)) history.replaceState(null, '', location.pathname + location.search + '#/status');
  route();
  if (document.visibilityState === 'visible') startPolling();
}

function init() {
  wire();
  start();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
