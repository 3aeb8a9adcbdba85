import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one Homing process, served at /metrics on the service listeners. */
export class Metrics {
  readonly registry = new Registry();
  readonly mqttConnections: Gauge;
  readonly mqttConnects: Counter<'result'>;
  readonly telemetryMessages: Counter<'hub'>;
  readonly twinUpdates: Counter<'hub' | 'side'>;
  readonly methodInvocations: Counter<'hub' | 'result'>;
  readonly httpRequests: Counter<'api' | 'status'>;
  readonly httpDuration: Histogram<'api'>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry });
    this.mqttConnections = new Gauge({ name: 'homing_mqtt_connections', help: 'Live MQTT connections', registers: [this.registry] });
    this.mqttConnects = new Counter({ name: 'homing_mqtt_connects_total', help: 'MQTT CONNECT attempts by result', labelNames: ['result'], registers: [this.registry] });
    this.telemetryMessages = new Counter({ name: 'homing_telemetry_messages_total', help: 'Telemetry messages accepted', labelNames: ['hub'], registers: [this.registry] });
    this.twinUpdates = new Counter({ name: 'homing_twin_updates_total', help: 'Twin updates by side', labelNames: ['hub', 'side'], registers: [this.registry] });
    this.methodInvocations = new Counter({ name: 'homing_method_invocations_total', help: 'Direct method invocations by result', labelNames: ['hub', 'result'], registers: [this.registry] });
    this.httpRequests = new Counter({ name: 'homing_http_requests_total', help: 'HTTP requests by API and status', labelNames: ['api', 'status'], registers: [this.registry] });
    this.httpDuration = new Histogram({ name: 'homing_http_request_seconds', help: 'HTTP request duration', labelNames: ['api'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registers: [this.registry] });
  }
}
