import { SUB_C2D, type SubscribeRoute } from '../routes.ts';

/**
 * Cloud-to-device messages: SUBSCRIBE `devices/{deviceId}/messages/devicebound/#` (QoS 1). Nothing sends C2D
 * messages yet; the subscription is acknowledged and remembered so delivery can be added here.
 */
export const c2dSubscribeRoute: SubscribeRoute = {
  name: 'c2d',
  flag: SUB_C2D,
  matches: (filter, deviceId) => filter === `devices/${deviceId}/messages/devicebound/#`,
};
