'use strict';
/*
 * Chat-completions SSE origin for benchmarks/chat_streams (Node.js standard library only).
 *
 * Every request on a data port (any method and path; the body, Content-Length or chunked, is read
 * and discarded) is answered `200 text/event-stream`, chunked: the response head at once, then
 * EVENTS OpenAI `chat.completion.chunk` events, event k (1-based) GAP_MS * k after the request,
 * each in its own chunk and its own socket write; the last one is followed by `data: [DONE]` and
 * the terminating chunk in the same write. Connections are kept alive. A request header
 * `X-Bench-Gap-Ms: N` sets another gap for that request (the benchmark's short warm-ups).
 *
 * Each event carries its send time as `"x_sent_us":<CLOCK_MONOTONIC µs>` (process.hrtime), read
 * just before the write, so a client on the same machine can compute each event's delay.
 *
 * The control port answers GET /healthz, and GET /stats: JSON with how late the event timers
 * fired (µs after their schedule) since the previous /stats, which it then resets.
 *
 *   node chat_origin.js --control-port P --ports P1,P2,... [--events 20] [--gap-ms 250]
 */

const net = require('net');

function parseArgs(argv) {
  const a = { ports: [], controlPort: 0, events: 20, gapMs: 250 };
  for (let i = 0; i < argv.length; i += 2) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--ports': a.ports = v.split(',').map(Number); break;
      case '--control-port': a.controlPort = Number(v); break;
      case '--events': a.events = Number(v); break;
      case '--gap-ms': a.gapMs = Number(v); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!a.ports.length || !a.controlPort || a.events < 1 || a.gapMs < 0) {
    throw new Error('usage: --control-port P --ports P1,P2,... [--events N] [--gap-ms MS]');
  }
  return a;
}

const ARGS = parseArgs(process.argv.slice(2));
const nowUs = () => Number(process.hrtime.bigint() / 1000n);

const RESPONSE_HEAD =
  'HTTP/1.1 200 OK\r\n' +
  'Content-Type: text/event-stream; charset=utf-8\r\n' +
  'Cache-Control: no-cache\r\n' +
  'Transfer-Encoding: chunked\r\n' +
  'openai-processing-ms: 112\r\n' +
  'x-request-id: req_3f1c9a0d7e5b4c2a8f6e1d0b9a7c5e3f\r\n' +
  '\r\n';
const CHUNK_PREFIX =
  'data: {"id":"chatcmpl-9xKq2bT7cQ4mZ1vN8pLwR3sYdE6f","object":"chat.completion.chunk",' +
  '"created":1718000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1",' +
  '"choices":[{"index":0,"delta":';
const WORDS = [' The', ' proxy', ' forwards', ' each', ' event', ' as', ' soon', ' as', ' it',
  ' arrives', ',', ' so', ' the', ' client', ' sees', ' tokens', ' without', ' delay', '.'];
const END_OF_STREAM = chunk('data: [DONE]\n\n') + '0\r\n\r\n';

function chunk(data) {
  return data.length.toString(16) + '\r\n' + data + '\r\n'; // ASCII only: length = bytes
}

/** Event k of n (0-based) as one HTTP chunk, stamped with the send time. */
function eventChunk(k, n, sentUs) {
  let delta = '{"content":"' + WORDS[(k - 1) % WORDS.length] + '"}';
  let finish = 'null';
  if (k === 0) delta = '{"role":"assistant","content":""}';
  if (k === n - 1 && n > 1) { delta = '{}'; finish = '"stop"'; }
  return chunk(CHUNK_PREFIX + delta + ',"logprobs":null,"finish_reason":' + finish +
               '}],"x_sent_us":' + sentUs + '}\n\n');
}

// Timer lateness since the last /stats (µs), for spotting origin-side artefacts.
let lateness = [];

/** The first complete request in buf: {method, path, gapMs, end} (end = index after its body),
 * or null while it is incomplete. */
function parseRequest(buf) {
  const he = buf.indexOf('\r\n\r\n');
  if (he < 0) return null;
  const head = buf.slice(0, he);
  const sp1 = head.indexOf(' ');
  const sp2 = head.indexOf(' ', sp1 + 1);
  const lower = head.toLowerCase();
  const cl = /\r\ncontent-length:[ \t]*(\d+)/.exec(lower);
  let end = he + 4;
  if (cl) {
    end += Number(cl[1]);
    if (buf.length < end) return null;
  } else if (/\r\ntransfer-encoding:[^\r]*chunked/.test(lower)) {
    // Minimal: the body ends at the first zero-size chunk (no trailers). Enough for JSON bodies.
    const z = buf.indexOf('\r\n0\r\n\r\n', he);
    if (z < 0) return null;
    end = z + 7;
  }
  const gap = /\r\nx-bench-gap-ms:[ \t]*(\d+)/.exec(lower);
  return { method: head.slice(0, sp1), path: head.slice(sp1 + 1, sp2),
           gapMs: gap ? Number(gap[1]) : ARGS.gapMs, end };
}

/** Answer one chat request on socket `s`, events gapMs apart; calls done(ok) after the last
 * write (ok = false if the connection went away first). */
function stream(s, gapMs, done) {
  const t0 = nowUs();
  const n = ARGS.events;
  const gapUs = gapMs * 1000;
  let k = 0;
  s.write(RESPONSE_HEAD);
  const next = () => {
    if (s.destroyed) return done(false);
    const now = nowUs();
    lateness.push(now - (t0 + (k + 1) * gapUs));
    let out = eventChunk(k, n, now);
    k += 1;
    if (k === n) out += END_OF_STREAM;
    s.write(out);
    if (k === n) return done(true);
    s.timer = setTimeout(next, Math.max(0, (t0 + (k + 1) * gapUs - nowUs()) / 1000));
  };
  s.timer = setTimeout(next, gapMs);
}

function onDataConnection(s) {
  s.setNoDelay(true);
  s.setEncoding('latin1');
  let buf = '';
  let busy = false;
  const serve = () => {
    if (busy) return;
    const req = parseRequest(buf);
    if (!req) {
      if (buf.length > 1 << 20) s.destroy();
      return;
    }
    buf = buf.slice(req.end);
    busy = true;
    stream(s, req.gapMs, (ok) => { busy = false; if (ok) serve(); });
  };
  s.on('data', (d) => { buf += d; serve(); });
  s.on('error', () => {});
  s.on('close', () => clearTimeout(s.timer));
}

function percentiles(xs) {
  const a = Float64Array.from(xs).sort();
  const at = (q) => (a.length ? a[Math.min(a.length - 1, Math.floor(q * a.length))] : null);
  return { count: a.length, p50: at(0.5), p99: at(0.99), p999: at(0.999),
           max: a.length ? a[a.length - 1] : null };
}

function onControlConnection(s) {
  s.setEncoding('latin1');
  let buf = '';
  s.on('data', (d) => {
    buf += d;
    const req = parseRequest(buf);
    if (!req) return;
    buf = buf.slice(req.end);
    let body = 'ok';
    if (req.path === '/stats') {
      body = JSON.stringify({ timer_late_us: percentiles(lateness) });
      lateness = [];
    }
    s.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ' +
            body.length + '\r\nConnection: close\r\n\r\n' + body);
    s.end();
  });
  s.on('error', () => {});
}

for (const port of ARGS.ports) {
  net.createServer({ noDelay: true }, onDataConnection)
    .listen({ host: '127.0.0.1', port, backlog: 8192 });
}
net.createServer(onControlConnection).listen({ host: '127.0.0.1', port: ARGS.controlPort });
process.on('SIGTERM', () => process.exit(0));
console.log(`chat origin: ports ${ARGS.ports.join(',')}, control ${ARGS.controlPort}, ` +
            `${ARGS.events} events ${ARGS.gapMs} ms apart`);
