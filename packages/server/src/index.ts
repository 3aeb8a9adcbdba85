export { startHoming, hubServiceSas, type RunningHoming, type ConnectionInfo, type RunningHub } from './server.ts';
export { loadStartConfig, DEFAULT_HUB_HOSTS, type StartOptions } from './config/load.ts';
export { readEnv, validateConfig, type HomingConfig, type HubConfig } from './config/config.ts';
export { createLogger, silentLogger, type Logger } from './observability/logger.ts';
export { HomingError, ERROR_CATALOGUE, type ErrorName } from './core/errors.ts';
export { buildSas, parseSas, deriveDeviceKey, parseConnectionString } from './core/sas.ts';
