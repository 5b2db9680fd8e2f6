export { RegistryClient, type ClientOptions } from './client.js';
export { RegistryError } from './errors.js';
export { pullImage, resolveManifest, type PullEvent, type PullOptions, type PullResult } from './pull.js';
export { pushImage, type PushEvent, type PushOptions, type PushResult } from './push.js';
export { findCredentials, storeCredentials, removeCredentials, dockerConfigPath, type Credentials } from './dockerconfig.js';
export { isInsecureRegistry } from './insecure.js';
