import { compileDockerfile } from './dockerfile/compile.js';
import type { Frontend } from './frontend.js';

export type { Frontend, FrontendRequest, ImageResolver, ResolvedImage } from './frontend.js';

/** The Dockerfile frontend. */
export const dockerfileFrontend: Frontend = { compile: compileDockerfile };
