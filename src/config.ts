/** The OCI runtime binary: KILN_RUNTIME, else runc. The one place the variable is read. */
export function configuredRuntime(env: NodeJS.ProcessEnv = process.env): string {
  return env.KILN_RUNTIME || 'runc';
}
