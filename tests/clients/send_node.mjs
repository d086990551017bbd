// Send Engage audience traffic to AMC Sync with the official Segment Node client
// (@segment/analytics-node), unchanged except for its `host`.
// Usage: node send_node.mjs HOST WRITE_KEY AUDIENCE_KEY COUNT
// Sends COUNT `Audience Entered` then COUNT/2 `Audience Exited` track calls; exits 1
// if the client emitted any error.
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, audience, countText] = process.argv.slice(2)
const count = Number(countText)
const analytics = new Analytics({ writeKey, host, path: '/v1/batch', flushAt: 25, maxRetries: 2 })
const errors = []
analytics.on('error', (e) => errors.push(String(e?.reason ?? e?.code ?? e)))

const settings = { advertiserId: '585806696618602999', countryCode: 'US', description: 'node client test' }
const context = { personas: { computation_key: audience, computation_class: 'audience', audience_settings: settings } }
for (let i = 0; i < count; i++) {
  analytics.track({
    userId: `node_user_${i}`,
    event: 'Audience Entered',
    properties: { audience_key: audience, [audience]: true, email: `node${i}@example.com` },
    context,
  })
}
for (let i = 0; i < count / 2; i++) {
  analytics.track({
    userId: `node_user_${i}`,
    event: 'Audience Exited',
    properties: { audience_key: audience, [audience]: false, email: `node${i}@example.com` },
    context,
    timestamp: new Date(Date.now() + 1000),
  })
}
await analytics.closeAndFlush({ timeout: 20000 })
if (errors.length) {
  console.error('errors:', errors)
  process.exit(1)
}
console.log(`sent ${count} entered + ${count / 2} exited`)
