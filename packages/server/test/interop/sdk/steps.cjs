'use strict';
// Shared by the SDK scenario scripts (e2e-provisioning.cjs, reprovision-scenarios.cjs): each step prints one JSON
// line {"step": "...", "ok": true|false, ...} that the test (test/helpers/sdk-steps.ts) reads.
const crypto = require('node:crypto');

/** Prints one step result as a JSON line on stdout. */
const report = (step, ok, data = {}) => process.stdout.write(`${JSON.stringify({ step, ok, ...data })}\n`);

/** `p`, or a rejection `timeout: <what>` after `ms`. */
const withTimeout = (p, ms, what) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout: ${what}`)), ms).unref())]);

/** A member device key derived from a symmetric-key group key (as devices do). */
const derive = (groupKey, id) => crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(id, 'utf8').digest('base64');

/** Runs one step and reports it: ok with what `fn` returns, or failed with the error's class and message. */
async function step(name, fn) {
  try {
    report(name, true, (await fn()) || {});
  } catch (e) {
    report(name, false, { error: `${e && e.constructor && e.constructor.name}: ${e && e.message}` });
  }
}

module.exports = { report, withTimeout, derive, step };
