// A webhook receiver that verifies Quern's deliveries (Standard Webhooks), for trying webhooks out.
//
//   QUERN_WEBHOOK_SECRET=whsec_… node docs/examples/webhook-receiver.mjs   # listens on :9000
//
// Get the secret with: curl -s -H "X-API-Key: $KEY" http://127.0.0.1:8000/v1/webhooks/secret
import { createServer } from 'node:http';
import { Webhook } from 'standardwebhooks';

const secret = process.env.QUERN_WEBHOOK_SECRET;
if (!secret) {
  console.error('set QUERN_WEBHOOK_SECRET to the secret GET /v1/webhooks/secret returns');
  process.exit(2);
}
const webhook = new Webhook(secret);
const seen = new Set();

createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => {
    body += chunk;
  });
  req.on('end', () => {
    let event;
    try {
      // Checks the signature (any of the space-separated ones) and that the timestamp is recent.
      event = webhook.verify(body, req.headers);
    } catch (err) {
      console.error(`refused: ${err.message}`);
      res.writeHead(400).end();
      return;
    }
    const id = req.headers['webhook-id'];
    if (seen.has(id)) {
      // Retries carry the same webhook-id: acknowledge, do nothing twice.
      res.writeHead(204).end();
      return;
    }
    seen.add(id);
    console.log(`${event.type} ${event.data.id} ${event.data.status}`, JSON.stringify(event.data.output));
    res.writeHead(204).end();
  });
}).listen(Number(process.env.PORT ?? 9000), () => console.log(`listening on :${process.env.PORT ?? 9000}`));
