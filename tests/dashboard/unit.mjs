// Unit checks of the dashboard's pure helpers (web/dom.js) in node; run by tests/dashboard.rs.

import assert from "node:assert/strict";
import { relative, ApiFailure } from "../../web/dom.js";

const now = Date.parse("2026-11-23T12:00:00Z");
const ago = (seconds) => new Date(now - seconds * 1000).toISOString();

assert.equal(relative(null, now), "never");
assert.equal(relative(ago(3), now), "just now");
assert.equal(relative(ago(45), now), "45 seconds ago");
assert.equal(relative(ago(60), now), "1 minute ago");
assert.equal(relative(ago(3599), now), "59 minutes ago");
assert.equal(relative(ago(7200), now), "2 hours ago");
assert.equal(relative(ago(86400 * 3), now), "3 days ago");
assert.equal(relative(ago(86400 * 60), now), "2 months ago");
assert.equal(relative(ago(86400 * 800), now), "2 years ago");
assert.equal(relative(ago(-86400 * 30), now), "in 1 month");

// Errors find the control they belong to from the server's sentence.
assert.equal(new ApiFailure(400, "bad_request", "Field `server` must be an http:// or https:// URL.").field, "server");
assert.equal(new ApiFailure(400, "bad_request", "Query `limit` must be a whole number from 1 to 1000.").field, "limit");
assert.equal(new ApiFailure(409, "conflict", "You already have an active token named `x` in crew `home`.").field, null);

console.log("ok");
