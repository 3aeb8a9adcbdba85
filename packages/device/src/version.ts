/** Sent as the HTTP User-Agent, the DPS MQTT ClientVersion and the hub DeviceClientType. */
export const CLIENT_VERSION = 'homing-device/0.1.0';
