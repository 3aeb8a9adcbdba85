'use strict';
// The issue-2 interop scenario, written the way an application developer uses the official SDKs.
// Run with NODE_EXTRA_CA_CERTS=<homing ca.pem>; argv[2] = the hub's service connection string.
// Prints one JSON line per step: {"step": "...", "ok": true|false, ...}.
const crypto = require('node:crypto');
const https = require('node:https');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const serviceCs = process.argv[2];
const hostName = /HostName=([^;]+)/.exec(serviceCs)[1];
const keyName = /SharedAccessKeyName=([^;]+)/.exec(serviceCs)[1];
const key = /SharedAccessKey=([^;]+)/.exec(serviceCs)[1];
const deviceId = `interop-${crypto.randomBytes(4).toString('hex')}`;

const report = (step, ok, data = {}) => process.stdout.write(`${JSON.stringify({ step, ok, ...data })}\n`);
const withTimeout = (p, ms, what) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout: ${what}`)), ms).unref())]);

function serviceSas() {
  const se = Math.floor(Date.now() / 1000) + 3600;
  const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(`${hostName}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${hostName}&sig=${encodeURIComponent(sig)}&skn=${keyName}&se=${se}`;
}

function getJson(path) {
  return new Promise((resolve, reject) => {
    https.get({ host: hostName, path, headers: { authorization: serviceSas() } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body)) : reject(new Error(`${res.statusCode} ${body}`))));
    }).on('error', reject);
  });
}

async function main() {
  const registry = Registry.fromConnectionString(serviceCs);
  const service = ServiceClient.fromConnectionString(serviceCs);
  let device;
  let client;
  let twin;
  const desiredSeen = [];
  let desiredWaiter = null;

  async function step(name, fn) {
    try {
      const data = await fn();
      report(name, true, data || {});
      return true;
    } catch (e) {
      report(name, false, { error: String(e && (e.constructor.name + ': ' + e.message)) });
      return false;
    }
  }

  const ok = await step('create device', async () => {
    const res = await registry.create({ deviceId });
    device = res.responseBody;
    return { deviceId: device.deviceId, hasKey: Boolean(device.authentication.symmetricKey.primaryKey), status: device.status };
  });
  if (!ok) return;

  await step('connect', async () => {
    const cs = `HostName=${hostName};DeviceId=${deviceId};SharedAccessKey=${device.authentication.symmetricKey.primaryKey}`;
    client = Client.fromConnectionString(cs, Mqtt);
    await withTimeout(client.open(), 20000, 'open');
    client.onDeviceMethod('reboot', (req, res) => {
      res.send(200, { rebooted: true, echo: req.payload }, () => {});
    });
    return {};
  });

  await step('get twin', async () => {
    twin = await withTimeout(client.getTwin(), 20000, 'getTwin');
    twin.on('properties.desired', (d) => {
      desiredSeen.push(d);
      if (desiredWaiter) desiredWaiter();
    });
    return { desiredVersion: twin.properties.desired.$version, reportedVersion: twin.properties.reported.$version };
  });

  await step('update reported properties', async () => {
    await withTimeout(new Promise((resolve, reject) => twin.properties.reported.update({ firmware: '1.2.3', nested: { a: 1 } }, (err) => (err ? reject(err) : resolve()))), 20000, 'reported update');
    const t = (await registry.getTwin(deviceId)).responseBody;
    return { firmware: t.properties.reported.firmware, nestedA: t.properties.reported.nested.a, reportedVersion: t.properties.reported.$version };
  });

  const waitDesired = (pred, what) => withTimeout(new Promise((resolve) => {
    const check = () => {
      const hit = desiredSeen.find(pred);
      if (hit) {
        desiredWaiter = null;
        resolve(hit);
      }
    };
    desiredWaiter = check;
    check();
  }), 20000, what);

  await step('update desired properties', async () => {
    const t = (await registry.getTwin(deviceId)).responseBody;
    await registry.updateTwin(deviceId, { properties: { desired: { targetTemp: 21 } } }, t.etag);
    const got = await waitDesired((d) => d.targetTemp === 21, 'desired patch');
    return { targetTemp: got.targetTemp, version: got.$version };
  });

  await step('invoke direct method', async () => {
    const r = await withTimeout(service.invokeDeviceMethod(deviceId, { methodName: 'reboot', payload: { delay: 5 }, responseTimeoutInSeconds: 10 }), 20000, 'invoke');
    return { status: r.result.status, payload: r.result.payload };
  });

  await step('send telemetry', async () => {
    const m = new Message(JSON.stringify({ temperature: 20.5 }));
    m.messageId = 'm-1';
    m.properties.add('alert', 'high temp');
    await withTimeout(client.sendEvent(m), 20000, 'sendEvent');
    await withTimeout(client.sendEvent(new Message('second')), 20000, 'sendEvent 2');
    const counts = await getJson(`/homing/telemetry/counts/${encodeURIComponent(deviceId)}?api-version=2021-04-12`);
    return { messages: counts.messages };
  });

  await step('reconnect after a server-side close', async () => {
    // Disabling the device makes the hub close its connection; the SDK keeps retrying; enabling it lets it back.
    const disconnected = new Promise((resolve) => client.once('disconnect', resolve));
    const d = (await registry.get(deviceId)).responseBody;
    await registry.update({ ...d, status: 'disabled' });
    const afterDisable = (await registry.get(deviceId)).responseBody.connectionState;
    await registry.update({ ...d, status: 'enabled' });
    // The SDK reconnects on its own (it has method and desired listeners); prove it with a method call and a desired patch.
    const r = await withTimeout(service.invokeDeviceMethod(deviceId, { methodName: 'reboot', payload: { again: true }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 30 }), 60000, 'invoke after reconnect');
    const t = (await registry.getTwin(deviceId)).responseBody;
    await registry.updateTwin(deviceId, { properties: { desired: { targetTemp: 23 } } }, t.etag);
    const got = await waitDesired((x) => x.targetTemp === 23, 'desired after reconnect');
    void disconnected;
    return { connectionStateWhileDisabled: afterDisable, methodStatus: r.result.status, targetTemp: got.targetTemp };
  });

  await step('delete device', async () => {
    await registry.delete(deviceId);
    let getError = null;
    try {
      await registry.get(deviceId);
    } catch (e) {
      getError = e.constructor.name;
    }
    // A new client with the old credentials is refused.
    const fresh = Client.fromConnectionString(`HostName=${hostName};DeviceId=${deviceId};SharedAccessKey=${device.authentication.symmetricKey.primaryKey}`, Mqtt);
    let openError = null;
    try {
      await withTimeout(fresh.open(), 20000, 'open after delete');
    } catch (e) {
      openError = e.constructor.name;
    }
    return { getError, openError };
  });

  await client.close().catch(() => {});
}

main()
  .catch((e) => report('fatal', false, { error: String(e) }))
  .finally(() => setTimeout(() => process.exit(0), 100).unref());
