// Sends the calls named in argv[2] (a JSON file: {host, writeKey, calls: [[method, args]...]})
// with Segment's own @segment/analytics-node, unmodified, then flushes and exits.
// Exit status 0 when every call was delivered; any delivery error is printed and fails.
const fs = require("fs");
const { Analytics } = require("@segment/analytics-node");

const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const analytics = new Analytics({
  writeKey: plan.writeKey,
  host: plan.host,
  path: "/v1/batch",
  flushAt: plan.flushAt || 15,
  flushInterval: 200,
  maxRetries: 3,
});
let failed = false;
analytics.on("error", (err) => {
  failed = true;
  console.error("delivery error:", err && (err.code || err.message || err), err && err.reason ? String(err.reason) : "");
});
for (const [method, args] of plan.calls) {
  analytics[method](args);
}
analytics.closeAndFlush({ timeout: 20000 }).then(() => {
  process.exit(failed ? 1 : 0);
});
