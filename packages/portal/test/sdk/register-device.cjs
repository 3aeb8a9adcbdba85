'use strict';
// A device registering the way the Azure IoT docs show it, over HTTPS: the official azure-iot-provisioning-device +
// azure-iot-provisioning-device-http + azure-iot-security-symmetric-key packages. Run with NODE_EXTRA_CA_CERTS=<CA>.
// argv: host idScope registrationId deviceKey. Prints one JSON line { step, ok, result? | error? }.
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

const [host, idScope, registrationId, key] = process.argv.slice(2);
const report = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

(async () => {
  try {
    const client = ProvisioningDeviceClient.create(host, idScope, new Http(), new SymmetricKeySecurityClient(registrationId, key));
    const result = await client.register();
    report({ step: 'register', ok: true, result: { assignedHub: result.assignedHub, deviceId: result.deviceId, status: result.status } });
  } catch (e) {
    report({ step: 'register', ok: false, error: String((e && e.message) || e) });
    process.exitCode = 1;
  }
})();
