'use strict';
// Shared by the SDK scenario scripts (e2e-provisioning.cjs, reprovision-scenarios.cjs): each step prints one JSON
// line {"step": "...", "ok": true|false, ...} that the test (test/helpers/sdk-steps.ts) reads. The device scripts
// (dps-mqtt-device.cjs, dps-x509-device.cjs) use runDeviceSteps and readTwin: one JSON line per step
// {"name": "...", "ok": true|false, "ms": ..., ...} that runDeviceScript (test/helpers/sdk-steps.ts) reads.
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

/**
 * Opens a hub device client (azure-iot-device), reads its twin and closes it again (also when the read failed).
 * Resolves with the desired properties as `{ desired }`.
 */
async function readTwin(device) {
  try {
    await withTimeout(device.open(), 15000, 'open');
    const twin = await withTimeout(device.getTwin(), 15000, 'getTwin');
    return { desired: { ...twin.properties.desired } };
  } finally {
    await withTimeout(device.close(), 5000, 'close').catch(() => undefined);
  }
}

/**
 * Runs `run(step)` for each step in order and prints one JSON line per step: what `run` resolves with plus `ms`, or
 * { name, ok: false, ms, error: { name, message, ctor, result } }. Exits 0 when every step was reported, else 1.
 */
function runDeviceSteps(steps, run) {
  const print = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
  (async () => {
    for (const s of steps) {
      const started = Date.now();
      try {
        print({ ...(await run(s)), ms: Date.now() - started });
      } catch (e) {
        print({
          name: s.name,
          ok: false,
          ms: Date.now() - started,
          error: { name: e && e.name, message: e && e.message, ctor: e && e.constructor && e.constructor.name, result: e && e.result },
        });
      }
    }
  })().then(
    () => process.exit(0),
    (e) => {
      print({ name: 'fatal', ok: false, error: { message: String(e) } });
      process.exit(1);
    },
  );
}

module.exports = { report, withTimeout, derive, step, readTwin, runDeviceSteps };
