'use strict';
/*
 * Load generator for benchmarks/chat_streams (Node.js standard library only).
 *
 * Opens STREAMS connections to 127.0.0.1:PORT, spread evenly over RAMP seconds, each sending one
 * `POST /v1/chat/completions` with a small OpenAI-style JSON body (`"stream": true`). It decodes
 * the chunked SSE response and, for every `data:` event, records its delay: the time of the read
 * that completed the event minus the `"x_sent_us"` send time the origin put in it (both
 * CLOCK_MONOTONIC, via process.hrtime). A stream is complete when the status is 200 and it got
 * EVENTS events, `data: [DONE]` and the final zero-size chunk; the client then closes it.
 *
 * At the end it prints one JSON line: completion counts, failure reasons, delay percentiles (µs)
 * over all events and over first events, response-head latency, how late its own event loop ran
 * (a 10 ms interval timer; a busy load generator shows here first) and its CPU time.
 *
 * --gap-ms asks the origin for another gap than its own (header X-Bench-Gap-Ms).
 *
 *   node chat_client.js --port P --streams N [--ramp-s S] [--events 20] [--timeout-s 60]
 *                       [--gap-ms MS]
 */

const net = require('net');

function parseArgs(argv) {
  const a = { port: 0, streams: 0, rampS: 1, events: 20, timeoutS: 60, gapMs: null };
  for (let i = 0; i < argv.length; i += 2) {
    const v = Number(argv[i + 1]);
    switch (argv[i]) {
      case '--port': a.port = v; break;
      case '--streams': a.streams = v; break;
      case '--ramp-s': a.rampS = v; break;
      case '--events': a.events = v; break;
      case '--timeout-s': a.timeoutS = v; break;
      case '--gap-ms': a.gapMs = v; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!a.port || a.streams < 1 || a.events < 1 || a.rampS < 0) {
    throw new Error('usage: --port P --streams N [--ramp-s S] [--events N] [--timeout-s S]');
  }
  return a;
}

const ARGS = parseArgs(process.argv.slice(2));
const nowUs = () => Number(process.hrtime.bigint() / 1000n);

const BODY = JSON.stringify({
  model: 'gpt-4o-mini',
  stream: true,
  temperature: 0.7,
  max_tokens: 256,
  messages: [
    { role: 'system', content: 'You are a helpful assistant. Answer briefly.' },
    { role: 'user', content: 'In two sentences: why put a reverse proxy in front of a model ' +
                             'server, and what does it cost in latency?' },
  ],
});
const REQUEST = (
  'POST /v1/chat/completions HTTP/1.1\r\n' +
  `Host: 127.0.0.1:${ARGS.port}\r\n` +
  'User-Agent: OpenAI/Python 1.54.0\r\n' +
  'Accept: application/json\r\n' +
  'Content-Type: application/json\r\n' +
  'Authorization: Bearer sk-bench-0000000000000000000000000000000000000000\r\n' +
  `Content-Length: ${Buffer.byteLength(BODY)}\r\n` +
  (ARGS.gapMs === null ? '' : `X-Bench-Gap-Ms: ${ARGS.gapMs}\r\n`) +
  '\r\n' + BODY);

// Parser states of one response.
const HEAD = 0, SIZE = 1, DATA = 2, DATA_END = 3, TRAILER = 4, RAW = 5, FINISHED = 6;

const delays = new Int32Array(ARGS.streams * ARGS.events);
let nDelays = 0;
const firstDelays = new Int32Array(ARGS.streams);
let nFirst = 0;
const headUs = new Int32Array(ARGS.streams);
let nHead = 0;
const failures = {};
const statuses = {};
let complete = 0;
let settled = 0;
let eventsReceived = 0;

function fail(st, reason) {
  if (st.state === FINISHED) return;
  st.state = FINISHED;
  failures[reason] = (failures[reason] || 0) + 1;
  settled += 1;
  st.sock.destroy();
  maybeEnd();
}

function succeed(st) {
  st.state = FINISHED;
  complete += 1;
  settled += 1;
  st.sock.end();
  maybeEnd();
}

/** Feed decoded body text to the SSE parser; `now` is the time of the read that brought it. */
function feedSse(st, text, now) {
  st.sse += text;
  let e;
  while ((e = st.sse.indexOf('\n\n')) >= 0) {
    const ev = st.sse.slice(0, e);
    st.sse = st.sse.slice(e + 2);
    if (ev.startsWith('data: [DONE]')) { st.doneSeen = true; continue; }
    const p = ev.indexOf('"x_sent_us":');
    if (p < 0) continue;
    const d = now - parseInt(ev.slice(p + 12), 10);
    if (st.events === 0) firstDelays[nFirst++] = d;
    if (nDelays < delays.length) delays[nDelays++] = d;
    st.events += 1;
    eventsReceived += 1;
  }
}

/** Check a finished body: all events and [DONE] received. */
function endOfBody(st) {
  if (st.status !== 200) return fail(st, `status ${st.status}`);
  if (st.events !== ARGS.events || !st.doneSeen) {
    return fail(st, `incomplete body (${st.events} events, done=${st.doneSeen})`);
  }
  succeed(st);
}

/** Minimal HTTP/1.1 response parser: head, then chunked (or close-delimited) body. */
function onData(st, data) {
  const now = nowUs();
  st.buf += data;
  for (;;) {
    const b = st.buf;
    if (st.state === HEAD) {
      const he = b.indexOf('\r\n\r\n');
      if (he < 0) return;
      st.status = parseInt(b.slice(9, 12), 10);
      statuses[st.status] = (statuses[st.status] || 0) + 1;
      headUs[nHead++] = now - st.t0;
      const chunked = /\r\ntransfer-encoding:[ \t]*chunked/i.test(b.slice(0, he));
      st.state = chunked ? SIZE : RAW;
      st.buf = b.slice(he + 4);
    } else if (st.state === SIZE) {
      const le = b.indexOf('\r\n');
      if (le < 0) return;
      const size = parseInt(b.slice(0, le), 16);
      if (Number.isNaN(size)) return fail(st, 'bad chunk size');
      st.buf = b.slice(le + 2);
      if (size === 0) st.state = TRAILER;
      else { st.left = size; st.state = DATA; }
    } else if (st.state === DATA) {
      const take = Math.min(st.left, b.length);
      if (take === 0) return;
      feedSse(st, b.slice(0, take), now);
      st.left -= take;
      st.buf = b.slice(take);
      if (st.left === 0) st.state = DATA_END;
    } else if (st.state === DATA_END) {
      if (b.length < 2) return;
      st.buf = b.slice(2);
      st.state = SIZE;
    } else if (st.state === TRAILER) {
      const le = b.indexOf('\r\n');
      if (le < 0) return;
      st.buf = b.slice(le + 2);
      if (le === 0) return endOfBody(st);
    } else if (st.state === RAW) {
      feedSse(st, b, now);
      st.buf = '';
      return;
    } else {
      return; // FINISHED: ignore anything after
    }
  }
}

function open(i) {
  const st = { i, state: HEAD, buf: '', sse: '', left: 0, events: 0, doneSeen: false,
               status: 0, t0: nowUs(), sock: null };
  const sock = net.connect({ host: '127.0.0.1', port: ARGS.port, noDelay: true });
  st.sock = sock;
  streams[i] = st;
  sock.setEncoding('latin1');
  sock.on('connect', () => sock.write(REQUEST));
  sock.on('data', (d) => onData(st, d));
  sock.on('error', (e) => fail(st, `error ${e.code || e.message}`));
  sock.on('close', () => {
    if (st.state === RAW) return endOfBody(st);
    fail(st, st.state === HEAD ? 'closed before response head' : 'closed mid-body');
  });
}

// Event-loop lag of this process: how late a 10 ms interval timer fires.
const lag = [];
let lagLast = nowUs();
const lagTimer = setInterval(() => {
  const t = nowUs();
  lag.push(Math.max(0, t - lagLast - 10000));
  lagLast = t;
}, 10);

const streams = new Array(ARGS.streams);
const tStart = nowUs();
let opened = 0;
let tOpened = null;

/** Open every connection that is due by now, then come back in 1 ms. */
function ramp() {
  const elapsed = (nowUs() - tStart) / 1e6;
  const due = ARGS.rampS > 0
    ? Math.min(ARGS.streams, Math.floor((elapsed / ARGS.rampS) * ARGS.streams) + 1)
    : ARGS.streams;
  while (opened < due) open(opened++);
  if (opened < ARGS.streams) setTimeout(ramp, 1);
  else tOpened = nowUs();
}

function pct(arr, n) {
  const a = arr.subarray(0, n).slice().sort();
  const at = (q) => (n ? a[Math.min(n - 1, Math.floor(q * n))] : null);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += a[i];
  return { count: n, p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999),
           max: n ? a[n - 1] : null, mean: n ? sum / n : null };
}

let ended = false;
function maybeEnd(force) {
  if (ended || (!force && settled < ARGS.streams)) return;
  ended = true;
  clearInterval(lagTimer);
  clearTimeout(deadline);
  const tEnd = nowUs();
  const cpu = process.cpuUsage();
  const out = {
    streams: ARGS.streams, events_expected: ARGS.events, complete,
    failed: ARGS.streams - complete, failures, statuses, events_received: eventsReceived,
    delay_us: pct(delays, nDelays), first_event_delay_us: pct(firstDelays, nFirst),
    response_head_us: pct(headUs, nHead),
    loop_lag_us: pct(Int32Array.from(lag), lag.length),
    ramp_s: ((tOpened || tEnd) - tStart) / 1e6, wall_s: (tEnd - tStart) / 1e6,
    cpu_s: (cpu.user + cpu.system) / 1e6,
  };
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}

const deadline = setTimeout(() => {
  for (let i = 0; i < opened; i++) {
    if (streams[i].state !== FINISHED) fail(streams[i], 'timeout');
  }
  if (opened < ARGS.streams) failures['not opened'] = ARGS.streams - opened;
  settled = ARGS.streams;
  maybeEnd(true);
}, ARGS.timeoutS * 1000);

ramp();
