import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/** Used only outside production when QUERN_SECRETS_KEY is unset (config refuses that in production). */
const DEVELOPMENT_KEY = 'quern-development-secrets-key-not-for-production';

/**
 * Encrypts secrets kept in Redis (webhook signing secrets) with AES-256-GCM, so a dump of Redis
 * or a look at its keys shows no secret in clear. The 256-bit key is the SHA-256 of
 * QUERN_SECRETS_KEY; API and workers must share it.
 */
export class SecretBox {
  private readonly key: Buffer;

  constructor(secretsKey: string | undefined) {
    this.key = createHash('sha256')
      .update(secretsKey ?? DEVELOPMENT_KEY)
      .digest();
  }

  seal(plain: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const data = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return `v1.${iv.toString('base64url')}.${data.toString('base64url')}.${cipher.getAuthTag().toString('base64url')}`;
  }

  /** The plain text, or throws if the value was not sealed with this key (or was altered). */
  open(sealed: string): string {
    const [version, iv, data, tag] = sealed.split('.');
    if (version !== 'v1' || !iv || data === undefined || !tag) throw new Error('not a sealed value');
    const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64url'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(data, 'base64url')), decipher.final()]).toString('utf8');
  }
}
