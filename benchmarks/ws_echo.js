// WebSocket echo server and load client for benchmarks/ws_tunnels (Node.js with Debian's node-ws).
//   node ws_echo.js server PORT
//   node ws_echo.js rtt URL CONNECTIONS SECONDS BYTES   closed loop per connection; prints JSON
//   node ws_echo.js idle URL CONNECTIONS                opens them, prints "open N", holds them
'use strict';
const WebSocket = require(process.env.NODE_WS || '/usr/share/nodejs/ws');

const [mode, ...args] = process.argv.slice(2);

if (mode === 'server') {
  const server = new WebSocket.Server({ host: '127.0.0.1', port: Number(args[0]), perMessageDeflate: false, backlog: 4096 });
  server.on('connection', (ws) => ws.on('message', (data, binary) => ws.send(data, { binary })));
} else if (mode === 'rtt') {
  const [url, connections, seconds, bytes] = [args[0], Number(args[1]), Number(args[2]), Number(args[3])];
  const payload = Buffer.alloc(bytes, 'x').toString();
  const samples = [];
  let open = 0;
  let done = false;
  let messages = 0;
  let started = 0;
  for (let i = 0; i < connections; i++) {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let sentAt = 0n;
    const send = () => { sentAt = process.hrtime.bigint(); ws.send(payload); };
    ws.on('open', () => {
      if (++open === connections) {
        started = Date.now();
        setTimeout(() => { done = true; }, seconds * 1000);
      }
      send();
    });
    ws.on('message', () => {
      if (started && !done) {
        samples.push(Number(process.hrtime.bigint() - sentAt) / 1000);
        messages++;
      }
      if (done) { ws.close(); return; }
      send();
    });
    ws.on('error', (e) => { console.error(String(e)); process.exit(1); });
  }
  const report = setInterval(() => {
    if (!done) return;
    clearInterval(report);
    samples.sort((a, b) => a - b);
    const at = (q) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))];
    console.log(JSON.stringify({ messages, per_second: messages / seconds, p50_us: at(0.5), p99_us: at(0.99) }));
    setTimeout(() => process.exit(0), 200);
  }, 50);
} else if (mode === 'idle') {
  const [url, connections] = [args[0], Number(args[1])];
  let open = 0;
  let next = 0;
  const sockets = [];
  const more = () => {  // at most 200 handshakes in flight
    while (next < connections && next - open < 200) {
      next++;
      const ws = new WebSocket(url, { perMessageDeflate: false });
      sockets.push(ws);
      ws.on('open', () => { open++; if (open === connections) console.log(`open ${open}`); more(); });
      ws.on('error', (e) => { console.error(String(e)); process.exit(1); });
    }
  };
  more();
} else {
  console.error('usage: ws_echo.js server PORT | rtt URL CONNECTIONS SECONDS BYTES | idle URL CONNECTIONS');
  process.exit(2);
}
