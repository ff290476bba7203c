// The ingest peer: @octokit/webhooks' Node middleware verifying the same signed deliveries.
// Usage: BENCH_SECRET=... node octokit_peer.mjs PORT  (run from the dir @octokit/webhooks is in)
import http from "node:http";
import { Webhooks, createNodeMiddleware } from "@octokit/webhooks";

const port = Number(process.argv[2]);
const webhooks = new Webhooks({ secret: process.env.BENCH_SECRET });
let received = 0;
// A verified delivery reaches the handlers; like the receiver, do nothing more for it.
webhooks.on("package", () => {
  received += 1;
});
const middleware = createNodeMiddleware(webhooks, { path: "/webhooks/github" });
const server = http.createServer((request, response) => {
  if (request.url === "/healthz") {
    response.writeHead(200, { "content-type": "text/plain" }).end(`ok ${received}\n`);
    return;
  }
  middleware(request, response);
});
server.keepAliveTimeout = 60000;
server.listen(port, "127.0.0.1", () => console.log(`octokit peer on ${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
