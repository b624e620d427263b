// A Node.js origin for the response-queue poisoning test: keep-alive, pipelining as Node does it,
// and slow answers (DELAY_MS, default 50) naming the request they answer.
//
//   node node_origin.js PORT [DELAY_MS]
//
// Every request gets 200 with {"path": <request target>, "method": ..., "body_length": ...}
// once its body has been read, after DELAY_MS. Prints "listening" when ready.
"use strict";

const http = require("http");

const port = parseInt(process.argv[2], 10);
const delayMs = parseInt(process.argv[3] || "50", 10);

const server = http.createServer((req, res) => {
  let bodyLength = 0;
  req.on("data", (chunk) => { bodyLength += chunk.length; });
  req.on("end", () => {
    setTimeout(() => {
      const body = JSON.stringify({ path: req.url, method: req.method, body_length: bodyLength });
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
      res.end(body);
    }, delayMs);
  });
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;
server.listen(port, "127.0.0.1", () => { console.log("listening"); });

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => { server.close(); process.exit(0); });
}
