declare module 'cluster-key-slot' {
  /** The Redis Cluster slot (0 to 16383) of a key, hash tags included. */
  // biome-ignore lint/style/noDefaultExport: the package's CommonJS export is this one function.
  export default function calculateSlot(key: string | Buffer): number;
}
